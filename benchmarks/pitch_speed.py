"""Pitch tracking speed: speechrep's vectorised YIN against pyworld (harvest, dio) and librosa (pyin, yin).

The input is eSpeak speech (en-us, several sentences at eSpeak pitch 30 and 70, resampled to 16 kHz) cut
to `--seconds`. Every tracker runs on the same array at a 10 ms hop with a 50–500 Hz search range, in one
process with one thread; reported: the best wall time over `--repeats` (the trackers alternate, so all see
the same machine load), seconds of audio per second, and the ratio of each peer's time to ours. Peers that
are not installed are listed as missing. Accuracy is the tests' business (`tests/test_audio_pitch.py`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pitch_speed.py --seconds 10 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from speechrep.audio.io import resample
from speechrep.audio.pitch import pitch_track
from speechrep.data.synth import espeak

SR = 16000
HOP = 160
SENTENCES = ("The quick brown fox jumps over the lazy dog while the sun sets slowly behind the hills.",
             "Would you like to hear the weather forecast for tomorrow morning, or shall I read the news?",
             "Seven silver swans swam silently across the frozen lake at dawn.")


def speech(seconds: float) -> np.ndarray:
    """`seconds` of eSpeak speech at 16 kHz (float64), sentences at two base pitches, repeated as needed."""
    pieces: list[np.ndarray] = []
    while sum(len(p) for p in pieces) < seconds * SR:
        for k, text in enumerate(SENTENCES):
            synth = espeak.synthesize(text, "en-us", pitch=(30, 70)[(len(pieces) + k) % 2], seed=len(pieces))
            wav = synth.samples.astype(np.float32) / 32768.0
            pieces.append(np.asarray(resample(wav, espeak.ESPEAK_SAMPLE_RATE, SR), dtype=np.float64).ravel())
    return np.concatenate(pieces)[: int(seconds * SR)]


def trackers() -> tuple[dict[str, Callable[[np.ndarray], object]], list[str]]:
    """The trackers to time (name → function of the wave) and the names of missing peers."""
    found: dict[str, Callable[[np.ndarray], object]] = {
        "speechrep_yin": lambda w: pitch_track(w, SR, HOP, fmin=50.0, fmax=500.0)}
    missing = []
    try:
        import pyworld

        found["pyworld_harvest"] = lambda w: pyworld.harvest(w, SR, f0_floor=50.0, f0_ceil=500.0,
                                                             frame_period=1000.0 * HOP / SR)
        found["pyworld_dio"] = lambda w: pyworld.dio(w, SR, f0_floor=50.0, f0_ceil=500.0,
                                                     frame_period=1000.0 * HOP / SR)
    except ImportError:
        missing.append("pyworld")
    try:
        import librosa

        found["librosa_pyin"] = lambda w: librosa.pyin(w, fmin=50.0, fmax=500.0, sr=SR, hop_length=HOP)
        found["librosa_yin"] = lambda w: librosa.yin(w, fmin=50.0, fmax=500.0, sr=SR, hop_length=HOP)
    except ImportError:
        missing.append("librosa")
    return found, missing


def main() -> None:
    """Time every available tracker on the same speech and print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    wav = speech(args.seconds)
    found, missing = trackers()
    for fn in found.values():  # warm-up: imports, FFT plans, JIT of librosa's numba code
        fn(wav[: SR])
    best = {name: float("inf") for name in found}
    for _ in range(args.repeats):
        for name, fn in found.items():
            start = time.perf_counter()
            fn(wav)
            best[name] = min(best[name], time.perf_counter() - start)
    ours = best["speechrep_yin"]
    report = {"audio_seconds": len(wav) / SR, "repeats": args.repeats, "missing": missing,
              "trackers": {name: {"seconds": round(t, 4), "realtime_factor": round(len(wav) / SR / t, 1),
                                  "time_vs_speechrep": round(t / ours, 2)} for name, t in best.items()}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The YIN pitch/energy tracker: synthetic signals of known F0, silence and noise, eSpeak speech (the pitch
requested per voice and per synthetic speaker), pyworld."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from speechrep.audio.pitch import PitchTrack, frame_energy_db, pitch_track
from speechrep.errors import SpeechrepError

SR = 16000
SENTENCE = "The quick brown fox jumps over the lazy dog while the sun sets slowly behind the hills."


def _time(seconds: float = 1.0) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _inner(track: PitchTrack) -> np.ndarray:
    """Voiced frames whose analysis window lies inside the signal (the first and last few are half zeros)."""
    keep = track.voiced.copy()
    keep[:4], keep[-4:] = False, False
    return keep


@pytest.mark.parametrize("f0", [60.0, 110.0, 220.0, 440.0])
def test_pure_tone_within_one_percent(f0: float) -> None:
    track = pitch_track(0.3 * np.sin(2 * np.pi * f0 * _time()), SR, hop=160)
    inner = _inner(track)
    assert len(track) == 100 and track.voiced.mean() > 0.95
    assert np.abs(track.f0_hz[inner] / f0 - 1).max() < 0.01
    assert np.allclose(track.times, (np.arange(100) + 0.5) * 0.01)


@pytest.mark.parametrize("f0", [85.0, 150.0, 310.0])
def test_harmonic_complex_within_one_percent(f0: float) -> None:
    # Stronger upper harmonics than the fundamental: the classic octave-error trap.
    t = _time()
    wav = sum(np.sin(2 * np.pi * f0 * k * t + k) * (0.5 if k == 1 else 1.0 / k) for k in range(1, 9))
    track = pitch_track(0.1 * wav, SR, hop=320)
    inner = _inner(track)
    assert track.voiced.mean() > 0.9
    assert np.abs(track.f0_hz[inner] / f0 - 1).max() < 0.01


def test_silence_and_white_noise_are_unvoiced() -> None:
    rng = np.random.default_rng(0)
    silent = pitch_track(np.zeros(SR), SR, hop=160)
    assert not silent.voiced.any() and (silent.f0_hz == 0).all() and (silent.energy_db == -100.0).all()
    noise = pitch_track(rng.normal(0, 0.1, SR), SR, hop=160)
    assert noise.voiced.mean() < 0.02 and np.median(noise.aperiodicity) > 0.5
    assert np.median(noise.energy_db) == pytest.approx(-20.0, abs=0.5)  # RMS 0.1 -> -20 dB


def test_chirp_is_tracked() -> None:
    t = _time(1.0)
    f_inst = 100.0 * 2.0 ** (2 * t)  # two octaves up in one second
    wav = 0.3 * np.sin(2 * np.pi * np.cumsum(f_inst) / SR)
    track = pitch_track(wav, SR, hop=160)
    inner = _inner(track)
    expected = 100.0 * 2.0 ** (2 * track.times)
    assert track.voiced.mean() > 0.95
    assert np.median(np.abs(track.f0_hz[inner] / expected[inner] - 1)) < 0.01
    assert np.abs(track.f0_hz[inner] / expected[inner] - 1).max() < 0.03


def test_voicing_follows_a_tone_between_silences() -> None:
    wav = np.concatenate([np.zeros(SR // 2), 0.2 * np.sin(2 * np.pi * 200 * _time(0.5)), np.zeros(SR // 2)])
    track = pitch_track(torch.from_numpy(wav).float()[None], SR, hop=160)
    assert not track.voiced[:45].any() and track.voiced[55:95].all() and not track.voiced[105:].any()


def test_frame_grid_and_energy() -> None:
    wav = 0.5 * np.sin(2 * np.pi * 200 * _time(1.0))
    assert len(pitch_track(wav, SR, hop=320)) == 50
    assert len(pitch_track(wav, SR, hop=320, num_frames=49)) == 49
    centres = np.array([4000.0, 8000.0])
    track = pitch_track(wav, SR, hop=320, centres=centres)
    assert np.allclose(track.times, centres / SR)
    # A sine of amplitude A has RMS A/√2: 0.5 -> -9.03 dB.
    assert frame_energy_db(wav, centres, 400) == pytest.approx([-9.03, -9.03], abs=0.05)
    assert len(pitch_track(np.zeros(0), SR, hop=160)) == 0


def test_bad_input_is_one_line_error() -> None:
    with pytest.raises(SpeechrepError, match="NaN"):
        pitch_track(np.array([0.0, np.nan] * 800), SR, hop=160)
    with pytest.raises(SpeechrepError, match="mono"):
        pitch_track(np.zeros((2, 1600)), SR, hop=160)
    with pytest.raises(SpeechrepError, match="fmin"):
        pitch_track(np.zeros(1600), SR, hop=160, fmin=600, fmax=500)


def _espeak_sentence(pitch: int, voice: str = "en-us", **settings: int) -> np.ndarray:
    espeak = pytest.importorskip("speechrep.data.synth.espeak")
    from speechrep.audio.io import resample

    try:
        synthesis = espeak.synthesize(SENTENCE, voice, pitch=pitch, seed=0, **settings)
    except (ImportError, OSError, RuntimeError) as err:  # no eSpeak NG library on this machine
        pytest.skip(f"eSpeak NG unavailable: {err}")
    wav = synthesis.samples.astype(np.float32) / 32768.0
    return np.asarray(resample(wav, espeak.ESPEAK_SAMPLE_RATE, SR), dtype=np.float64).ravel()


def test_espeak_median_f0_follows_the_requested_pitch() -> None:
    low, high = (pitch_track(_espeak_sentence(p), SR, hop=160) for p in (30, 70))
    low_f0, high_f0 = np.median(low.f0_hz[low.voiced]), np.median(high.f0_hz[high.voiced])
    # Measured: 84.6 Hz at eSpeak pitch 30, 124.2 Hz at pitch 70 (en-us voice).
    assert 70 < low_f0 < 100 and 110 < high_f0 < 140
    assert high_f0 / low_f0 > 1.3
    assert 0.4 < low.voiced.mean() < 0.8 and 0.4 < high.voiced.mean() < 0.8


def _median_f0(wav: np.ndarray) -> float:
    track = pitch_track(wav, SR, hop=160)
    return float(np.median(track.f0_hz[track.voiced]))


# Both registers, the synthetic speakers' pitch range (speakers.make_speakers: 25..75).
VARIANTS = ["f1", "f3", "linda", "Annie", "grandma", "m1", "m3", "klatt3", "david", "Michael", "grandpa"]
PITCHES = [25, 37, 50, 62, 75]


def test_median_f0_rises_with_the_requested_pitch_within_each_variant() -> None:
    """Per eSpeak voice variant, the tracker's median F0 follows the requested pitch in rank (Spearman 1).

    eSpeak scales its base pitch by 2^((pitch − 50)/50) (pitch_adjust_tab), an octave from 25 to 75; the
    intonation contour sits on top of it, so the median moves less. Measured on 2026-12-05 (this sentence,
    en-us): 0.46 (Annie) to 0.83 (linda) octaves from pitch 25 to 75, median F0 at pitch 50 from 74.8 Hz
    (david) to 236.4 Hz (Annie); every variant strictly increasing."""
    spans = {}
    for variant in VARIANTS:
        medians = np.array([_median_f0(_espeak_sentence(p, f"en-us+{variant}")) for p in PITCHES])
        assert (np.diff(medians) > 0).all(), f"{variant}: {medians.round(1)}"  # rank correlation 1
        spans[variant] = np.log2(medians[-1] / medians[0])
    assert all(0.35 < span < 1.0 for span in spans.values()), spans


def test_corpus_speakers_f0_matches_their_requested_voice_and_pitch(tmp_path: Path) -> None:
    """Each synthetic speaker's median voiced F0 over its corpus utterances (random EQ, reverberation, noise,
    utterance pitch jittered by ±6, other sentences) against the same tracker on a clean rendering of the
    sentence above with the voice, pitch, range and rate its card records.

    The requested pitch alone ranks speakers poorly (the variant sets the register: Spearman 0.51 on these
    13 speakers); with the voice it is matched. Measured on 2026-12-05, micro corpus (pr, sid, asv; 13
    speakers): Spearman 0.995, median |difference| 13 cents, largest 106 cents; tiny preset (26 speakers):
    0.992, 41 cents, 119 cents. Tolerances: Spearman > 0.9, median < 60 cents, every speaker < 200 cents
    (the jitter alone is ±6 eSpeak pitch units, up to ±100 cents)."""
    pytest.importorskip("speechrep.data.synth.espeak")
    from speechrep.data.batching import load_cuts
    from speechrep.data.synth import make_synthetic_corpus

    subsets = ["pr", "sid", "asv"]
    try:
        make_synthetic_corpus(tmp_path, preset="micro", seed=0, subsets=subsets, num_workers=1)
    except (ImportError, OSError) as err:  # no eSpeak NG library on this machine
        pytest.skip(f"eSpeak NG unavailable: {err}")
    measured, reference, requested = [], [], []
    for subset in subsets:
        card = json.loads((tmp_path / subset / "card.json").read_text())
        settings = {s["id"]: s for split in card["speakers"].values() for s in split}
        voiced: dict[str, list[np.ndarray]] = {}
        for split in ("train", "dev", "test"):
            for cut in load_cuts(tmp_path, subset, split):
                track = pitch_track(cut.load_audio()[0], cut.sampling_rate, hop=160)
                voiced.setdefault(cut.supervisions[0].speaker, []).append(track.f0_hz[track.voiced])
        for speaker, parts in voiced.items():
            s = settings[speaker]
            measured.append(float(np.median(np.concatenate(parts))))
            reference.append(_median_f0(_espeak_sentence(s["pitch"], s["voice"], pitch_range=s["pitch_range"],
                                                         rate=s["rate"])))
            requested.append(s["pitch"])
    cents = np.abs(1200 * np.log2(np.array(measured) / np.array(reference)))
    assert len(measured) == 13
    assert spearmanr(measured, reference)[0] > 0.9
    assert np.median(cents) < 60 and cents.max() < 200, cents.round()


@pytest.mark.parametrize("pitch", [30, 70])
def test_agrees_with_pyworld_harvest(pitch: int) -> None:
    pyworld = pytest.importorskip("pyworld")
    wav = _espeak_sentence(pitch)
    track = pitch_track(wav, SR, hop=160)
    f0_ref, times_ref = pyworld.harvest(wav, SR, f0_floor=50.0, f0_ceil=500.0, frame_period=10.0)
    # Harvest's frame k is at k·10 ms, ours at (k + 0.5)·10 ms: interpolate harvest onto our centres.
    ref = np.interp(track.times, times_ref, f0_ref)
    ref_voiced = np.interp(track.times, times_ref, (f0_ref > 0).astype(float)) > 0.99
    both = track.voiced & ref_voiced
    cents = np.abs(1200 * np.log2(track.f0_hz[both] / ref[both]))
    # Measured: median 3.6 / 2.6 cents, gross errors (> 200 cents) 0.0 % / 0.6 % at pitch 30 / 70.
    assert both.mean() > 0.4
    assert np.median(cents) < 10.0
    assert (cents > 200).mean() < 0.10

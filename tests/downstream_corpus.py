"""A tiny tone-based corpus with the label fields of the synthetic mini-SUPERB, for the downstream tests.

Every class is a different pattern of tones, so a head on filterbank features can learn it in a few steps:
ks (custom keyword), sid (speaker), er (custom emotion + fold), ic (custom intent), pr/pf (custom phones +
phone_alignment), asr (text). Writes CORPUS/<subset>/{train,dev,test}.jsonl.gz like `speechrep synth`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

SR = 16000
SPLIT_SIZES = {"train": 48, "dev": 16, "test": 16}
KEYWORDS = ("yes", "no", "up", "down")
SPEAKERS = (110.0, 170.0, 230.0, 310.0)
EMOTIONS = ("neu", "hap", "ang", "sad")
SLOTS = {"action": ("activate", "decrease"), "object": ("lamp", "music", "heat"),
         "location": ("kitchen", "bedroom")}
PHONES = ("AA", "B", "K", "S", "IY", "M")
LETTERS = "abcd"


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq * (1 + rng.uniform(-0.02, 0.02)) * t)


def _finish(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    wav = wav * rng.uniform(0.1, 0.4) + rng.normal(0, 0.01, len(wav))
    return wav.astype(np.float32)


def _ks(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    k = i % len(KEYWORDS)
    wav = np.concatenate([_tone(400 + 300 * k, 0.25, rng), _tone(2600 - 300 * k, 0.25, rng)])
    return _finish(wav, rng), {"custom": {"keyword": KEYWORDS[k]}, "speaker": f"s{i % 3}"}


def _sid(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    s = i % len(SPEAKERS)
    f0 = SPEAKERS[s]
    wav = sum(_tone(f0 * h, 0.6, rng) / h for h in range(1, 6))
    return _finish(wav * rng.uniform(0.5, 1.0), rng), {"speaker": f"spk{s}"}


def _er(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    e = i % len(EMOTIONS)
    carrier = _tone(300 + 500 * e, 0.6, rng)
    t = np.arange(len(carrier)) / SR
    wav = carrier * (0.6 + 0.4 * np.sin(2 * np.pi * (2 + 4 * e) * t))
    return _finish(wav, rng), {"custom": {"emotion": EMOTIONS[e], "fold": 1 + (i // len(EMOTIONS)) % 3},
                               "speaker": f"s{i % 2}"}


def _ic(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    values = {slot: choices[rng.integers(len(choices))] for slot, choices in SLOTS.items()}
    segments = [_tone(500 + 700 * k + 250 * choices.index(values[slot]), 0.2, rng)
                for k, (slot, choices) in enumerate(SLOTS.items())]
    return _finish(np.concatenate(segments), rng), {"custom": {"intent": values},
                                                    "text": " ".join(values.values())}


def _phones(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    n = int(rng.integers(4, 8))
    phones = [PHONES[j] for j in rng.integers(len(PHONES), size=n)]
    chunks, alignment, t = [np.zeros(int(0.05 * SR))], [], 0.05
    for p in phones:
        dur = float(rng.uniform(0.08, 0.14))
        chunks.append(_tone(300 + 450 * PHONES.index(p), dur, rng))
        alignment.append([p, round(t, 4), round(t + len(chunks[-1]) / SR, 4)])
        t += len(chunks[-1]) / SR
    chunks.append(np.zeros(int(0.05 * SR)))
    return _finish(np.concatenate(chunks), rng), {"custom": {"phones": phones, "phone_alignment": alignment},
                                                  "text": " ".join(phones)}


def _asr(i: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    words = ["".join(LETTERS[j] for j in rng.integers(len(LETTERS), size=int(rng.integers(1, 3))))
             for _ in range(int(rng.integers(1, 3)))]
    chunks = [np.zeros(int(0.05 * SR))]
    for word in words:
        for ch in word:
            chunks.append(_tone(400 + 600 * LETTERS.index(ch), 0.12, rng))
        chunks.append(np.zeros(int(0.1 * SR)))
    return _finish(np.concatenate(chunks), rng), {"text": " ".join(words)}


MAKERS = {"ks": _ks, "sid": _sid, "er": _er, "ic": _ic, "pr": _phones, "pf": _phones, "asr": _asr}


def make_corpus(root: Path, subsets: tuple[str, ...], seed: int = 0) -> Path:
    """Write the requested subsets under `root` and return it."""
    for subset in subsets:
        for split_index, (split, size) in enumerate(SPLIT_SIZES.items()):
            rng = np.random.default_rng([seed, split_index, len(subset)])
            audio_dir = root / subset / "audio"
            audio_dir.mkdir(parents=True, exist_ok=True)
            cuts = []
            for i in range(size):
                wav, labels = MAKERS[subset](i, rng)
                cut_id = f"{subset}-{split}-{i:03d}"
                path = audio_dir / f"{cut_id}.flac"
                sf.write(path, wav, SR)
                rec = Recording.from_file(path, recording_id=cut_id)
                sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=rec.duration,
                                         text=labels.get("text"), speaker=labels.get("speaker"),
                                         custom=labels.get("custom"))
                cuts.append(MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                    supervisions=[sup]))
            CutSet.from_cuts(cuts).to_file(root / subset / f"{split}.jsonl.gz")
    return root

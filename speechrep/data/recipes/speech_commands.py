"""Speech Commands v0.01 (Warden 2018, arXiv:1804.03209) → the `ks` subset, SUPERB keyword-spotting labels.

Layout (the extracted `speech_commands_v0.01.tar.gz`): one folder per word (`yes/0a7c2a8d_nohash_0.wav`, the
prefix before `_nohash_` is the speaker), `_background_noise_/*.wav`, `validation_list.txt`,
`testing_list.txt`. Labels: the 10 commands, `_unknown_` for the 20 other words, `_silence_` for 1 s slices of
the background noise.
The split is the official one: files in the two lists go to dev and test, every other file to train.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet, MonoCut, SupervisionSegment

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
)

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
KEYWORDS = COMMANDS + (UNKNOWN, SILENCE)
BACKGROUND = "_background_noise_"
# share of each background-noise file cut into silence slices for (train, dev); the rest goes to test
SILENCE_SHARES = (0.8, 0.1)


def _root(corpus_dir: Path) -> Path:
    """The folder holding the word folders: the corpus dir itself or its `speech_commands_v0.01/`."""
    nested = corpus_dir / "speech_commands_v0.01"
    return nested if nested.is_dir() else corpus_dir


def _read_list(path: Path) -> set[str]:
    """Relative wav paths (`word/file.wav`) listed one per line."""
    return {
        line.strip() for line in require(path, "official split list").read_text().splitlines() if line.strip()
    }


def _word_cut(root: Path, rel: str) -> MonoCut:
    """The cut of one spoken word, labelled with its keyword (a command or `_unknown_`)."""
    word, name = rel.split("/")
    speaker = name.split("_nohash_")[0]
    keyword = word if word in COMMANDS else UNKNOWN
    rec = recording(root / rel, recording_id=f"{word}_{Path(name).stem}")
    return whole_cut(rec, text=word, speaker=speaker, custom={"keyword": keyword})


def _silence_cuts(root: Path, skipped: SkipReport) -> dict[str, list[MonoCut]]:
    """Consecutive 1 s slices of each background-noise file: first 80% to train, 10% to dev, 10% to test."""
    noise_dir = require(root / BACKGROUND, "background noise folder")
    out: dict[str, list[MonoCut]] = {"train": [], "dev": [], "test": []}
    for path in sorted(noise_dir.glob("*.wav")):
        rec = skipped.attempt(lambda path=path: recording(path, recording_id=f"{BACKGROUND}{path.stem}"))
        if rec is None:
            continue
        n = int(rec.duration)
        n_train, n_dev = int(n * SILENCE_SHARES[0]), int(n * SILENCE_SHARES[1])
        for k in range(n):
            split = "train" if k < n_train else "dev" if k < n_train + n_dev else "test"
            cut_id = f"{SILENCE}_{path.stem}_{k:04d}"
            sup = SupervisionSegment(
                id=cut_id,
                recording_id=rec.id,
                start=0.0,
                duration=1.0,
                channel=0,
                text="",
                language="en",
                custom={"keyword": SILENCE},
            )
            out[split].append(
                MonoCut(id=cut_id, start=float(k), duration=1.0, channel=0, recording=rec, supervisions=[sup])
            )
    return out


def prepare_speech_commands(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read Speech Commands v0.01 into `ks/{train,dev,test}` cuts with `custom["keyword"]`."""
    done = load_if_done(output_dir, {"ks": ("train", "dev", "test")})
    if done:
        return done
    root = _root(Path(corpus_dir))
    dev_list, test_list = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    words = sorted(
        p.relative_to(root).as_posix() for p in root.glob("*/*.wav") if p.parent.name != BACKGROUND
    )
    if not words:
        raise CorpusLayoutError(
            f"{root}: no word folders with .wav files (expected e.g. yes/0a7c2a8d_nohash_0.wav)"
        )
    skipped = SkipReport()
    skipped.problems += [
        f"{root / rel}: listed in the split lists, missing"
        for rel in sorted((dev_list | test_list) - set(words))
    ]
    by_split: dict[str, list[MonoCut]] = _silence_cuts(root, skipped)
    for rel in words:
        split = "dev" if rel in dev_list else "test" if rel in test_list else "train"
        cut = skipped.attempt(lambda rel=rel: _word_cut(root, rel))
        if cut is not None:
            by_split[split].append(cut)
    skipped.report(output_dir, "speech_commands")
    return write_manifests({"ks": {s: CutSet.from_cuts(c) for s, c in by_split.items()}}, output_dir)

"""VoxCeleb1 (Nagrani et al. 2017) → `sid` (closed-set identification) and `asv` (verification trials).

Layout: `wav/<speaker>/<video>/<nnnnn>.wav`, `iden_split.txt` (`<1|2|3> <speaker>/<video>/<nnnnn>.wav`: train,
dev, test of the identification protocol) and the verification list `veri_test2.txt` (the cleaned list,
preferred) or `veri_test.txt` (`<1|0> <enrol path> <test path>`). Cut ids are `<speaker>-<video>-<nnnnn>`.
`asv`: the test split holds the utterances of the trial list, `asv/test_trials.txt` its trials with cut ids
(`<1|0> <cut id> <cut id>`); the speakers outside the trials are the training pool, of which every
twentieth speaker is held out as dev. `asv/{train,dev}_trials.txt` hold every same-speaker pair of their cuts
and a seeded sample of different-speaker pairs (`speechrep.data.trials.make_trials`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut

from speechrep.storage import atomic_write_text
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
from speechrep.data.trials import make_trials

IDEN_SPLITS = {"1": "train", "2": "dev", "3": "test"}
TRIAL_LISTS = ("veri_test2.txt", "veri_test.txt")  # the cleaned list first
ASV_DEV_EVERY = 20


def cut_id_of(rel: str) -> str:
    """`id10270/x6uYqmx31kE/00001.wav` → `id10270-x6uYqmx31kE-00001`."""
    return rel.removesuffix(".wav").replace("/", "-")


def _parse_lines(path: Path, fields: int) -> list[list[str]]:
    """Whitespace-split lines of a protocol file, each required to have `fields` fields."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        if len(row) != fields:
            raise CorpusLayoutError(f"{path}:{i}: expected {fields} fields, got {len(row)}")
    return rows


class _Cuts:
    """One cut per wav, built on first use and shared by the subsets; None for a missing/unreadable file."""

    def __init__(self, wav_dir: Path, skipped: SkipReport) -> None:
        self.wav_dir, self.skipped, self.cache = wav_dir, skipped, {}

    def __call__(self, rel: str) -> MonoCut | None:
        if rel not in self.cache:
            rec = self.skipped.attempt(
                lambda: recording(self.wav_dir / rel, cut_id_of(rel), "audio in the protocol")
            )
            self.cache[rel] = None if rec is None else whole_cut(rec, speaker=rel.split("/")[0])
        return self.cache[rel]

    def many(self, rels: Iterable[str]) -> list[MonoCut]:
        """The cuts of the files that could be read."""
        return [cut for cut in map(self, rels) if cut is not None]


def prepare_voxceleb1(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read VoxCeleb1 into `sid/` and `asv/` {train,dev,test} cuts plus `asv/<split>_trials.txt`."""
    corpus_dir = Path(corpus_dir)
    trial_outputs = [f"asv/{split}_trials.txt" for split in IDEN_SPLITS.values()]
    done = load_if_done(output_dir, {"sid": IDEN_SPLITS.values(), "asv": IDEN_SPLITS.values()}, trial_outputs)
    if done:
        return done
    wav_dir = require(corpus_dir / "wav", "wav folder")
    iden = _parse_lines(require(corpus_dir / "iden_split.txt", "identification split"), 2)
    trial_list = next((corpus_dir / n for n in TRIAL_LISTS if (corpus_dir / n).is_file()), None)
    if trial_list is None:
        raise CorpusLayoutError(f"{corpus_dir}: missing the verification list ({' or '.join(TRIAL_LISTS)})")
    trials = _parse_lines(trial_list, 3)
    skipped = SkipReport()
    cut_of = _Cuts(wav_dir, skipped)

    for code, rel in iden:
        if code not in IDEN_SPLITS:
            raise CorpusLayoutError(f"{corpus_dir / 'iden_split.txt'}: unknown split code {code!r} for {rel}")
    sid = {
        split: cut_of.many(rel for code, rel in iden if IDEN_SPLITS[code] == split)
        for split in IDEN_SPLITS.values()
    }

    trial_files = sorted({rel for _, a, b in trials for rel in (a, b)})
    trial_speakers = {rel.split("/")[0] for rel in trial_files}
    all_files = sorted(p.relative_to(wav_dir).as_posix() for p in wav_dir.glob("*/*/*.wav"))
    pool = [rel for rel in all_files if rel.split("/")[0] not in trial_speakers]
    pool_speakers = sorted({rel.split("/")[0] for rel in pool})
    dev_speakers = set(pool_speakers[ASV_DEV_EVERY - 1 :: ASV_DEV_EVERY] or pool_speakers[-1:])
    asv = {
        "train": cut_of.many(rel for rel in pool if rel.split("/")[0] not in dev_speakers),
        "dev": cut_of.many(rel for rel in pool if rel.split("/")[0] in dev_speakers),
        "test": cut_of.many(trial_files),
    }
    skipped.report(output_dir, "voxceleb1")
    manifests = write_manifests(
        {
            "sid": {s: CutSet.from_cuts(c) for s, c in sid.items()},
            "asv": {s: CutSet.from_cuts(c) for s, c in asv.items()},
        },
        output_dir,
    )
    if output_dir is not None:
        trial_ids = {
            "train": make_trials(np.random.default_rng(0), asv["train"]),
            "dev": make_trials(np.random.default_rng(1), asv["dev"]),
            # trials of a left-out file are dropped with it
            "test": [
                (int(label), cut_id_of(a), cut_id_of(b)) for label, a, b in trials if cut_of(a) and cut_of(b)
            ],
        }
        for split, rows in trial_ids.items():
            text = "".join(f"{label} {a} {b}\n" for label, a, b in rows)
            atomic_write_text(Path(output_dir) / "asv" / f"{split}_trials.txt", text)
    return manifests

"""Fluent Speech Commands (Lugosch et al. 2019, arXiv:1904.03670) → the `ic` subset
(intent = action, object, location).

Layout (`fluent_speech_commands_dataset/`): `data/{train,valid,test}_data.csv` with the columns
`,path,speakerId,transcription,action,object,location` and the audio under `wavs/speakers/<speakerId>/*.wav`.
The official splits are speaker-disjoint; `valid` becomes our `dev`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lhotse import CutSet

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

SPLIT_FILES = {"train": "train_data.csv", "dev": "valid_data.csv", "test": "test_data.csv"}
COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")


def _read_split(corpus_dir: Path, csv_name: str, skipped: SkipReport) -> CutSet:
    """The cuts of one official split CSV, with `custom["intent"] = {action, object, location}`."""
    csv_path = require(corpus_dir / "data" / csv_name, "split CSV")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not set(COLUMNS) <= set(rows[0]):
        raise CorpusLayoutError(f"{csv_path}: expected the columns {', '.join(COLUMNS)}")
    cuts = []
    for row in rows:
        audio = corpus_dir / row["path"]
        rec = skipped.attempt(lambda a=audio: recording(a, a.stem, f"audio listed in {csv_name}"))
        if rec is None:
            continue
        intent = {"action": row["action"], "object": row["object"], "location": row["location"]}
        cuts.append(
            whole_cut(rec, text=row["transcription"], speaker=row["speakerId"], custom={"intent": intent})
        )
    return CutSet.from_cuts(cuts)


def prepare_fluent_speech_commands(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read Fluent Speech Commands into `ic/{train,dev,test}` cuts with their intent slots."""
    done = load_if_done(output_dir, {"ic": tuple(SPLIT_FILES)})
    if done:
        return done
    corpus_dir = Path(corpus_dir)
    skipped = SkipReport()
    ic = {split: _read_split(corpus_dir, name, skipped) for split, name in SPLIT_FILES.items()}
    skipped.report(output_dir, "fluent_speech_commands")
    return write_manifests({"ic": ic}, output_dir)

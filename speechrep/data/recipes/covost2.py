"""CoVoST 2 En→De (Wang et al. 2020) → the subset `st`: SUPERB-SG's speech translation
(`speechrep.downstream.tasks.st`).

Layout, as facebookresearch/covost's README and `get_covost_splits.py` describe it: the Common Voice English
folder (`<cv release>/en/`: `clips/*.mp3`, `validated.tsv`) with CoVoST's `covost_v2.en_de.tsv` (from
`covost_v2.en_de.tsv.tar.gz`) put beside it. `--corpus-dir` is that folder. The recipe reads either
- `covost_v2.en_de.{train,dev,test}.tsv`, the split files `get_covost_splits.py --version 2 --src-lang en
  --tgt-lang de` writes (columns `path`, `sentence`, `translation`, `client_id`), when all three are there; or
- `covost_v2.en_de.tsv` (columns `path`, `translation`, `split`; `sentence` and `client_id` taken from it when
  it has them, else from Common Voice's `validated.tsv`, joined on `path` as `get_covost_splits.py` does),
  with CoVoST 2's splits: train = `train` and `train_covost`, dev = `dev`, test = `test`.
TSVs are tab-separated with a header and no quoting; a backslash escapes the next character (pandas'
`escapechar`, which CoVoST's files are written with). Cuts: id the clip's stem, `text` the English
sentence, `speaker` the client id, `custom.translation` the German translation, `custom.target_language` `de`;
both texts as published (case and punctuation kept: BLEU is computed on them), spaces collapsed. MP3 is
decoded by soundfile and resampled to 16 kHz on load; a missing or unreadable clip is left out and listed in
OUT/skipped_covost2.txt.
"""
from __future__ import annotations

import re
from pathlib import Path

from lhotse import CutSet

from speechrep.data.recipes._common import (
    SPLITS,
    CorpusLayoutError,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    read_tsv,
    recording,
    require,
    whole_cut,
    write_manifests,
)

SOURCE, TARGET = "en", "de"
PREFIX = f"covost_v2.{SOURCE}_{TARGET}"
SPLIT_NAMES = {"train": ("train", "train_covost"), "dev": ("dev",), "test": ("test",)}  # CoVoST 2's `split`
_ESCAPE = re.compile(r"\\(.)")


def _text(value: str) -> str:
    return " ".join(_ESCAPE.sub(r"\1", value).split())


def covost_rows(folder: Path) -> dict[str, list[dict[str, str]]]:
    """The rows (path, sentence, translation, client_id) of each split, from the split files or the joined
    CoVoST and Common Voice TSVs (see the module docstring)."""
    split_files = {split: folder / f"{PREFIX}.{split}.tsv" for split in SPLITS}
    if all(p.is_file() for p in split_files.values()):
        return {split: [row for _, row in read_tsv(path, ("path", "sentence", "translation"), "CoVoST split")]
                for split, path in split_files.items()}
    covost = folder / f"{PREFIX}.tsv"
    if not covost.is_file():
        raise CorpusLayoutError(f"{folder}: neither {PREFIX}.tsv nor {PREFIX}.{{train,dev,test}}.tsv "
                                "(put CoVoST 2's translation TSV in the Common Voice English folder, beside "
                                "clips/)")
    rows = [row for _, row in read_tsv(covost, ("path", "translation", "split"), "CoVoST translation TSV")]
    if rows and "sentence" not in rows[0]:
        validated = read_tsv(folder / "validated.tsv", ("path", "sentence"), "Common Voice validated.tsv")
        english = {row["path"]: row for _, row in validated}
        rows = [{**row, "sentence": english[row["path"]]["sentence"],
                 "client_id": english[row["path"]].get("client_id", "")}
                for row in rows if row["path"] in english]  # an inner join, like get_covost_splits.py
    return {split: [row for row in rows if row["split"] in names] for split, names in SPLIT_NAMES.items()}


def prepare_covost2(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read CoVoST 2 En→De into `st/{train,dev,test}` cuts with `text` and `custom.translation`."""
    folder = Path(corpus_dir)
    done = load_if_done(output_dir, {"st": SPLITS})
    if done:
        return done
    clips = require(folder / "clips", "Common Voice clips folder")
    skipped = SkipReport()
    splits: dict[str, CutSet] = {}
    for split, rows in covost_rows(folder).items():
        cuts = []
        for row in rows:
            sentence, translation = _text(row["sentence"]), _text(row["translation"])
            if not sentence or not translation:
                continue
            name = row["path"]
            rec = skipped.attempt(lambda: recording(clips / name, Path(name).stem, "Common Voice clip"))
            if rec is None:
                continue
            cuts.append(whole_cut(at_sample_rate(rec), text=sentence, speaker=row.get("client_id") or None,
                                  custom={"translation": translation, "target_language": TARGET}))
        splits[split] = CutSet.from_cuts(cuts)
    skipped.report(output_dir, "covost2")
    return write_manifests({"st": splits}, output_dir)

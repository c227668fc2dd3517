"""QUESST 2014 (MediaEval query-by-example) → the `qbe` subset, English part by default, as in SUPERB QbE.

Layout (`quesst14Database/`): documents in `Audio/`, queries in `dev_queries/` and `eval_queries/` (8 kHz wav,
resampled to 16 kHz on load), and in `scoring/`: `language_key_{utterances,dev,eval}.lst`
(`<path> <language>`)
and the ground truth `groundtruth_quesst14_{dev,eval}/quesst14_{dev,eval}.rttm`, one `LEXEME <document> 1
<start> <duration> <query> ...` line per occurrence of a query in a document.
`qbe/dev` (dev queries) and `qbe/test` (eval queries) each hold their queries and every document; each cut has
`custom["role"]` (`query` or `document`), and a query's `custom["matches"]` lists the documents containing it.
`qbe/<split>_truth.txt` lists every query-document pair as `<query> <document> <1|0>`. QbE has no training
data, so no train split is written.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from lhotse import CutSet, MonoCut

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
    write_text_atomic,
)

QUERY_SETS = {"dev": ("dev", "dev_queries"), "test": ("eval", "eval_queries")}


def read_language_key(path: Path, languages: Sequence[str] | None) -> list[str]:
    """Utterance names (file stems) of a language key list, kept when their language is in `languages`."""
    names = []
    for i, line in enumerate(require(path, "language key list").read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise CorpusLayoutError(f"{path}:{i}: expected '<path> <language>', got {line!r}")
        if languages is None or fields[1] in languages:
            names.append(Path(fields[0]).stem)
    return names


def read_ground_truth(path: Path) -> dict[str, set[str]]:
    """Query name → the documents that contain it, from the LEXEME lines of a ground-truth RTTM."""
    matches: dict[str, set[str]] = defaultdict(set)
    for line in require(path, "ground-truth RTTM").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == "LEXEME":
            matches[fields[5]].add(fields[1])
    return matches


def _cuts(folder: Path, names: list[str], custom: dict, skipped: SkipReport) -> list[MonoCut]:
    """Whole-file cuts of `folder/<name>.wav` at 16 kHz, for the files that can be read."""
    recs = [
        skipped.attempt(lambda n=n: recording(folder / f"{n}.wav", n, "audio in the language key"))
        for n in names
    ]
    return [whole_cut(at_sample_rate(rec), custom=dict(custom)) for rec in recs if rec is not None]


def prepare_quesst14(
    corpus_dir: Path, output_dir: Path | None = None, languages: Sequence[str] | None = ("nnenglish",)
) -> Manifests:
    """Read QUESST14 into `qbe/{dev,test}` cuts of queries (with their matching documents) and documents."""
    done = load_if_done(output_dir, {"qbe": QUERY_SETS}, [f"qbe/{split}_truth.txt" for split in QUERY_SETS])
    if done:
        return done
    root, scoring = Path(corpus_dir), Path(corpus_dir) / "scoring"
    require(scoring, "scoring folder")
    docs = read_language_key(scoring / "language_key_utterances.lst", languages)
    skipped = SkipReport()
    doc_cuts = _cuts(root / "Audio", docs, {"role": "document"}, skipped)
    kept = {c.id for c in doc_cuts}
    qbe = {}
    for split, (name, folder) in QUERY_SETS.items():
        truth = read_ground_truth(scoring / f"groundtruth_quesst14_{name}" / f"quesst14_{name}.rttm")
        queries = _cuts(
            root / folder,
            read_language_key(scoring / f"language_key_{name}.lst", languages),
            {"role": "query"},
            skipped,
        )
        for query in queries:
            query.supervisions[0].custom["matches"] = sorted(truth.get(query.id, set()) & kept)
        qbe[split] = CutSet.from_cuts(queries + doc_cuts)
    skipped.report(output_dir, "quesst14")
    write_manifests({"qbe": qbe}, output_dir)
    if output_dir is not None:
        for split, cuts in qbe.items():
            queries = [c for c in cuts if c.supervisions[0].custom["role"] == "query"]
            text = "".join(
                f"{q.id} {d.id} {int(d.id in q.supervisions[0].custom['matches'])}\n"
                for q in queries
                for d in doc_cuts
            )
            write_text_atomic(Path(output_dir) / "qbe" / f"{split}_truth.txt", text)
    return qbe

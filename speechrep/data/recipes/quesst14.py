"""QUESST 2014 (MediaEval query-by-example) → the `qbe` subset, English part by default, as in SUPERB QbE.

Layout (`quesst14Database/`): documents in `Audio/`, queries in `dev_queries/` and `eval_queries/` (8 kHz
wav, resampled to 16 kHz on load), and in `scoring/`: `language_key_{utterances,dev,eval}.lst`
(`<path> <language>`) and the ground truth `groundtruth_quesst14_{dev,eval}/quesst14_{dev,eval}.rttm`, one
`LEXEME <document> 1 <start> <duration> <query> ...` line per occurrence of a query in a document.
Written like the synthetic `qbe` subset: `qbe/<split>_queries.jsonl.gz` (dev: the dev queries, test: the eval
queries; `custom["matches"]`: the documents containing the query), `qbe/<split>.jsonl.gz` (every document;
`custom["contains"]`: the split's queries it contains) and `qbe/<split>_truth.txt` (`<query> <document> <1|0>`
for every pair). QbE has no training data, so no train split is written.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from lhotse import CutSet, Recording

from speechrep.storage import atomic_write_text
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


def _recordings(folder: Path, names: list[str], skipped: SkipReport) -> list[Recording]:
    """16 kHz recordings of `folder/<name>.wav`, for the files that can be read."""
    recs = [
        skipped.attempt(lambda n=n: recording(folder / f"{n}.wav", n, "audio in the language key"))
        for n in names
    ]
    return [at_sample_rate(rec) for rec in recs if rec is not None]


def prepare_quesst14(
    corpus_dir: Path, output_dir: Path | None = None, languages: Sequence[str] | None = ("nnenglish",)
) -> Manifests:
    """Read QUESST14 into `qbe/{dev,test}` documents and `qbe/{dev,test}_queries` with the ground truth."""
    layout = {"qbe": [f"{split}{kind}" for split in QUERY_SETS for kind in ("", "_queries")]}
    done = load_if_done(output_dir, layout, [f"qbe/{split}_truth.txt" for split in QUERY_SETS])
    if done:
        return done
    root, scoring = Path(corpus_dir), Path(corpus_dir) / "scoring"
    require(scoring, "scoring folder")
    skipped = SkipReport()
    docs = _recordings(
        root / "Audio", read_language_key(scoring / "language_key_utterances.lst", languages), skipped
    )
    qbe, truth_lines = {}, {}
    for split, (name, folder) in QUERY_SETS.items():
        truth = read_ground_truth(scoring / f"groundtruth_quesst14_{name}" / f"quesst14_{name}.rttm")
        queries = _recordings(
            root / folder, read_language_key(scoring / f"language_key_{name}.lst", languages), skipped
        )
        matches = {q.id: sorted(truth.get(q.id, set()) & {d.id for d in docs}) for q in queries}
        contains = defaultdict(list)
        for query, found_in in matches.items():
            for doc in found_in:
                contains[doc].append(query)
        qbe[f"{split}_queries"] = CutSet.from_cuts(
            whole_cut(q, custom={"role": "query", "matches": matches[q.id]}) for q in queries
        )
        qbe[split] = CutSet.from_cuts(
            whole_cut(d, custom={"role": "document", "contains": contains.get(d.id, [])}) for d in docs
        )
        truth_lines[split] = "".join(
            f"{q.id} {d.id} {int(d.id in matches[q.id])}\n" for q in queries for d in docs
        )
    skipped.report(output_dir, "quesst14")
    write_manifests({"qbe": qbe}, output_dir)
    if output_dir is not None:
        for split, text in truth_lines.items():
            atomic_write_text(Path(output_dir) / "qbe" / f"{split}_truth.txt", text)
    return {"qbe": qbe}

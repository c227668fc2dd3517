"""The measurements of docs/synthesis.md: copy-synthesis and kNN-VC grids judged by `apps.evaluate`.

    python -m speechrep.apps.experiments copy --out OUT --corpus CORPUS --judges JUDGES.json \
        --system original --system griffin-lim --system logmel=VOCODER_RUN ...
    python -m speechrep.apps.experiments knn --out OUT --parallel PARALLEL --judges JUDGES.json \
        --vocoder logmel=RUN --vocoder mh2=RUN ... --grid GRID.json

JUDGES.json names the PR and ASV runs: {"corpus": ..., "pr_run": ..., "pr_upstream": ..., "asv_run": ...,
"asv_upstream": ...}. Both commands append their rows to OUT/synthesis.json (the report section's input,
`speechrep.bench.report.synthesis`) and keep a few before/after waves in OUT/samples/.

Copy-synthesis: the `pr` test split of CORPUS, per speaker the first 4 utterances are the speaker's ASV
enrolment and the next 8 are synthesised (40 items on the small corpus). kNN-VC: on a corpus of
`apps.parallel`, speakers 4-7 are sources and 0-3 targets; each source's shared sentences 0-2 are converted
to each target, whose own sentences (in order, up to the reference amount) form the matching set; MCD is
against the target's rendition of the same sentence, PER against the source's phones, and the ASV
enrolment of every speaker is its shared sentences 3-11 (never converted, never matched).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from speechrep.apps.convert import VoiceConverter
from speechrep.apps.evaluate import EvalItem, TrainedTask, evaluate_items
from speechrep.apps.knnvc import MatchingSet
from speechrep.apps.vocoder_train import copy_synthesize, load_vocoder
from speechrep.audio import load_audio, save_audio
from speechrep.audio.synthesis import SAMPLE_RATE
from speechrep.data.batching import load_cuts
from speechrep.storage import atomic_write_json

log = logging.getLogger(__name__)
RESULTS = "synthesis.json"


def load_judges(path: Path) -> tuple[TrainedTask, TrainedTask]:
    """The PR and ASV runs named by a judges file."""
    spec = json.loads(Path(path).read_text())
    corpus = Path(spec["corpus"])
    return (TrainedTask("pr", Path(spec["pr_run"]), spec["pr_upstream"], corpus),
            TrainedTask("asv", Path(spec["asv_run"]), spec["asv_upstream"], corpus))


POINT = ("system", "vocoder", "seconds", "k", "lambda")  # what names a row: a rerun replaces it


def _append(out: Path, section: str, rows: list[dict[str, Any]], samples: list[dict[str, str]]) -> None:
    """Merge rows (and samples) into OUT/synthesis.json: a row of the same point or sample of the same
    title replaces the old one, the others stay."""
    path = out / RESULTS
    data = json.loads(path.read_text()) if path.is_file() else {}

    def point(row: dict[str, Any]) -> tuple:
        return tuple(row.get(k) for k in POINT)

    new = {point(r) for r in rows}
    data[section] = [r for r in data.get(section, []) if point(r) not in new] + rows
    titles = {s["title"] for s in samples}
    data["samples"] = [s for s in data.get("samples", []) if s["title"] not in titles] + samples
    atomic_write_json(path, data)


def _source_path(cut) -> Path:  # noqa: ANN001 - a lhotse cut
    return Path(cut.recording.sources[0].source)


def copy_synthesis(out: Path, corpus: Path, systems: dict[str, str],
                   judges: tuple[TrainedTask, TrainedTask], per_speaker: int = 8,
                   enrolment: int = 4) -> list[dict[str, Any]]:
    """Copy-synthesis of the `pr` test split by each system (`original`, `griffin-lim` or a vocoder run)."""
    pr, asv = judges
    by_speaker: dict[str, list] = {}
    for cut in load_cuts(corpus, "pr", "test"):
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
    speakers = {s: [_source_path(c) for c in cuts[:enrolment]] for s, cuts in sorted(by_speaker.items())}
    chosen = [c for s in sorted(by_speaker) for c in by_speaker[s][enrolment:enrolment + per_speaker]]
    rows, samples = [], []
    for name, system in systems.items():
        started = time.time()
        sources = [_source_path(c) for c in chosen]
        if system == "original":
            outputs = sources
        else:
            outputs = copy_synthesize(system, sources, out / "copy" / name)
        items = [EvalItem(o, c.supervisions[0].speaker, None, s, list(c.supervisions[0].custom["phones"]))
                 for o, c, s in zip(outputs, chosen, sources)]
        result = evaluate_items(items, speakers, pr, asv)
        rows.append({"system": name, "vocoder": system, **result, "wall_s": round(time.time() - started, 1)})
        log.info("copy-synthesis %s: %s", name, rows[-1])
        if system != "original":
            samples.append(_sample(out, "copy", f"copy-synthesis: {name}", sources[0],
                                   outputs[0]))
    _append(out, "copy_synthesis", rows, samples)
    return rows


def _sample(out: Path, section: str, title: str, before: Path, after: Path,
            reference: Path | None = None) -> dict[str, str]:
    """Copy a before/after pair (and a reference) into OUT/samples/ as 16 kHz waves; their relative paths."""
    entry = {"section": section, "title": title}
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    for key, path in (("before", before), ("after", after), ("reference", reference)):
        if path is not None:
            name = f"{slug}_{key}.wav"
            save_audio(out / "samples" / name, load_audio(path, SAMPLE_RATE)[0].numpy(), SAMPLE_RATE)
            entry[key] = f"samples/{name}"
    return entry


def _reference_set(converter: VoiceConverter, own: list, seconds: float | None) -> MatchingSet:
    """The matching set of a target's own sentences, in order, up to `seconds` of speech (None: all)."""
    chosen, total = [], 0.0
    for cut in own:
        if seconds is not None and total >= seconds:
            break
        feats = converter.extractor.file_features(_source_path(cut))
        if seconds is not None and total + cut.duration > seconds:  # the last file cut to the amount
            feats = feats[:max(1, int((seconds - total) * SAMPLE_RATE / converter.extractor.hop))]
        chosen.append(feats)
        total += cut.duration
    return MatchingSet.from_features(chosen)


def knn_grid(out: Path, parallel: Path, vocoders: dict[str, str], grid: list[dict[str, Any]],
             judges: tuple[TrainedTask, TrainedTask], sentences: int = 3) -> list[dict[str, Any]]:
    """kNN-VC for every grid point {vocoder, seconds, k, lambda} over every source/target pair."""
    pr, asv = judges
    own = load_cuts(parallel, "vc_pool", "train")
    shared = load_cuts(parallel, "vc_pool", "dev")
    speakers = sorted({c.supervisions[0].speaker for c in own})
    sources, targets = speakers[4:8], speakers[0:4]
    sentence = {(c.supervisions[0].speaker, c.supervisions[0].custom["sentence"][1]): c for c in shared}
    enrolment = {s: [_source_path(sentence[(s, i)]) for i in range(sentences, 12)] for s in speakers}
    own_by_speaker = {s: [c for c in own if c.supervisions[0].speaker == s] for s in targets}
    loaded: dict[str, VoiceConverter] = {}
    rows, samples = [], []
    for point in grid:
        started = time.time()
        name = point["vocoder"]
        if name not in loaded:
            loaded[name] = VoiceConverter(*reversed(load_vocoder(Path(vocoders[name]))))
        converter = loaded[name]
        folder = out / "knn" / "_".join(f"{k}{v}" for k, v in sorted(point.items()))
        items = []
        for target in targets:
            matching = _reference_set(converter, own_by_speaker[target], point.get("seconds"))
            for source in sources:
                for i in range(sentences):
                    cut = sentence[(source, i)]
                    path = folder / f"{source}_{i}_to_{target}.wav"
                    wave = converter.convert(_source_path(cut), matching, point.get("k", 4),
                                             point.get("lambda", 1.0))
                    save_audio(path, wave.numpy(), SAMPLE_RATE)
                    items.append(EvalItem(path, target, source, _source_path(sentence[(target, i)]),
                                          list(cut.supervisions[0].custom["phones"])))
        result = evaluate_items(items, enrolment, pr, asv)
        rows.append({**point, **result, "wall_s": round(time.time() - started, 1)})
        log.info("kNN-VC %s: %s", point, rows[-1])
        if point.get("sample"):
            first = items[0]
            samples.append(_sample(out, "knn", f"kNN-VC {point['sample']}: {sources[0]} → "
                                   f"{targets[0]}", _source_path(sentence[(sources[0], 0)]), first.converted,
                                   first.reference))
    _append(out, "knn_vc", rows, samples)
    return rows


def references_row(out: Path, parallel: Path, judges: tuple[TrainedTask, TrainedTask],
                   sentences: int = 3) -> dict[str, Any]:
    """The unconverted sources judged like the conversions: the floor of target similarity, the best PER."""
    pr, asv = judges
    shared = load_cuts(parallel, "vc_pool", "dev")
    speakers = sorted({c.supervisions[0].speaker for c in shared})
    sentence = {(c.supervisions[0].speaker, c.supervisions[0].custom["sentence"][1]): c for c in shared}
    enrolment = {s: [_source_path(sentence[(s, i)]) for i in range(sentences, 12)] for s in speakers}
    items = [EvalItem(_source_path(sentence[(s, i)]), t, s, _source_path(sentence[(t, i)]),
                      list(sentence[(s, i)].supervisions[0].custom["phones"]))
             for t in speakers[0:4] for s in speakers[4:8] for i in range(sentences)]
    row = {"vocoder": "source (unconverted)", **evaluate_items(items, enrolment, pr, asv)}
    data = json.loads((out / RESULTS).read_text()) if (out / RESULTS).is_file() else {}
    data["knn_vc_source"] = row
    atomic_write_json(out / RESULTS, data)
    return row


def vc_task_rows(out: Path, bench: Path) -> list[dict[str, Any]]:
    """The `vc` rows of a `speechrep benchmark --tasks vc` folder, copied into OUT/synthesis.json."""
    rows = []
    for path in sorted(Path(bench).glob("*/vc/results.json")):
        result = json.loads(path.read_text())
        rows.append({"upstream": result["upstream"], "dev_mcd": result["dev"]["mcd"],
                     "test_mcd": result["test"]["mcd"], "layer_weights": result.get("layer_weights"),
                     "wall_s": result.get("wall_time_s")})
    path = out / RESULTS
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["vc_task"] = rows
    atomic_write_json(path, data)
    return rows


def main(argv: list[str] | None = None) -> None:
    """The command line of the module (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m speechrep.apps.experiments")
    parser.add_argument("what", choices=("copy", "knn", "sources", "vc-task"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--judges", type=Path, help="copy, knn, sources: the PR and ASV runs (JSON)")
    parser.add_argument("--bench", type=Path, help="vc-task: a `speechrep benchmark --tasks vc` folder")
    parser.add_argument("--corpus", type=Path, help="copy: the corpus with the `pr` subset")
    parser.add_argument("--parallel", type=Path, help="knn, sources: a corpus of speechrep.apps.parallel")
    parser.add_argument("--system", action="append", default=[], help="copy: NAME=RUN, original, griffin-lim")
    parser.add_argument("--vocoder", action="append", default=[], help="knn: NAME=RUN")
    parser.add_argument("--grid", type=Path, help="knn: a JSON list of {vocoder, seconds, k, lambda, sample}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "vc-task":
        vc_task_rows(args.out, args.bench)
        return
    judges = load_judges(args.judges)
    if args.what == "copy":
        systems = {s.partition("=")[0]: (s.partition("=")[2] or s) for s in args.system}
        copy_synthesis(args.out, args.corpus, systems, judges)
    elif args.what == "knn":
        vocoders = dict(v.split("=", 1) for v in args.vocoder)
        knn_grid(args.out, args.parallel, vocoders, json.loads(args.grid.read_text()), judges)
    else:
        references_row(args.out, args.parallel, judges)


if __name__ == "__main__":
    main()

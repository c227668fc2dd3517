"""`speechrep probe`: what each hidden state of a frozen upstream does for a task, and what it resembles.

    summary = probe(ProbeConfig(["hubert_tiny"], ["pf"], corpus_dir, out_dir, preset="tiny"))
    print(format_probe(summary), end="")

For every upstream and task: one run per hidden state (`layers=[k]`), the learned weighted sum of all of them
(`layers=None`, SUPERB's protocol), then the two feature-integration setups of the JSALT 2022 layer analysis,
built around the best layer on dev: `first2+best` = [0, 1, best] and `best±1` = [best−1, best, best+1], both
clipped to the upstream's hidden states. Every run is a `downstream.runner.run_pair` (the benchmark's
protocol: frozen upstream, light head, checkpoint chosen on dev, test read once at the end), and the runs of
an upstream share one feature cache, so the upstream itself runs once over the corpus. Then, unless
`similarity=False`, the linear CKA, SVCCA and PWCCA of every hidden state with log-mel, phone, word and
speaker identity and pitch on the dev split of `similarity_subset` (`analysis.similarity`).

Layout of `out`:

    config.yaml                              the ProbeConfig of the last invocation
    probe.json                               per upstream: per task the rows below and the best layer; CKA
    features/<upstream>-<fingerprint>/       every hidden state of the upstream (see downstream.features)
    <upstream>/<task>/layer_<k>/             a run_pair folder per hidden state (results.json once done)
    <upstream>/<task>/weighted_sum/
    <upstream>/<task>/layers_<i>-<j>-<k>/    an integration setup (a one-layer setup is that layer's folder)
    <upstream>/similarity/similarity.json    the CKA, SVCCA and PWCCA tables

Resumable: finished runs (their results.json) are skipped, a killed run resumes, a computed CKA table is kept.
`out` is held by one probe at a time and records the settings that decide its numbers (corpus, preset,
overrides, the CKA sample); later invocations may probe other upstreams, tasks or layers (probe.json keeps
every upstream × task entry as its last invocation probed it; finished runs are reused). Each run folder
records its upstream's weights fingerprint: other weights under the same name are a one-line OutputError
unless `overwrite` starts over.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from speechrep.analysis.similarity import TARGETS, layer_similarity
from speechrep.config import save_config
from speechrep.data.batching import load_cuts
from speechrep.data.shar import INDEX_NAME, has_split, is_shar_dir
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.runner import (
    UpstreamChoice,
    check_overrides,
    load_task_config,
    load_upstream_module,
    parse_upstream,
    run_pair,
    upstream_identity,
)
from speechrep.downstream.tasks import TASKS, TaskSpec, get_task
from speechrep.errors import ConfigError
from speechrep.storage import OutputError, OutputFolder, atomic_write_json, disk_errors
from speechrep.train.distributed import resolve_device
from speechrep.upstream.extract import parse_layers

log = logging.getLogger(__name__)

PROBE_FILE = "probe.json"


@dataclass
class ProbeConfig:
    """Which upstreams on which tasks, which hidden states, and the CKA sample; saved as OUT/config.yaml."""

    upstreams: list[str]  # as `speechrep benchmark --upstream`: names, folders, LABEL=PATH, NAME@random
    tasks: list[str]
    corpus: Path
    out: Path
    layers: str | list[int] = "all"  # the hidden states probed one by one: "all" or indices ("0,4,8")
    preset: str | None = None  # configs/downstream/<preset>/<task>.yaml layered on each task's file
    overrides: list[str] = field(default_factory=list)  # key=value for every task, TASK.key=value for one
    similarity: bool = True  # the CKA table of every upstream
    similarity_subset: str = "pr"  # its frames: the dev split of this subset (phone and word alignments)
    max_frames: int = 4000  # a seeded sample of at most this many frames
    seed: int = 0
    overwrite: bool = False  # start over in an --out made with other settings (not saved: an action)

    def settings(self) -> dict[str, Any]:
        """What decides the numbers in `out` (upstreams, tasks and layers may be added later)."""
        sample = {"subset": self.similarity_subset, "max_frames": self.max_frames, "seed": self.seed}
        return {"corpus": str(Path(self.corpus).resolve()), "preset": self.preset,
                "overrides": list(self.overrides), "similarity": sample}

    def check(self) -> None:
        """One-line ConfigErrors for settings that cannot run (before any folder is touched)."""
        if not self.upstreams:
            raise ConfigError("--upstream: no upstream given")
        tasks = [t.strip() for t in self.tasks]
        if not tasks or not all(tasks) or len(set(tasks)) != len(tasks):
            raise ConfigError(f"--tasks {','.join(self.tasks)!r}: give one or more distinct task names")
        if self.layers != "all":
            parse_layers(self.layers, sys.maxsize)  # the syntax; each upstream checks the range
        if self.max_frames < 4:
            raise ConfigError(f"--max-frames {self.max_frames}: CKA needs at least 4 frames")
        for item in self.overrides:
            key = item.partition("=")[0].strip().split(".")
            if key[-1] == "layers" and (len(key) == 1 or (len(key) == 2 and key[0] in TASKS)):
                raise ConfigError(f"override {item!r}: the probe chooses the layers of each run (--layers)")


# -------------------------------------------------------------------------------------------- one task

def integration_setups(best: int, num_layers: int) -> dict[str, list[int]]:
    """The feature-integration setups around the best layer, clipped to hidden states 0..num_layers−1."""

    def within(layers: Sequence[int]) -> list[int]:
        return sorted({k for k in layers if 0 <= k < num_layers})

    return {"first2+best": within((0, 1, best)), "best±1": within((best - 1, best, best + 1))}


def run_folder(layers: list[int] | None) -> str:
    """The folder of a run on these hidden states: layer_<k>, layers_<i>-<j>-..., or weighted_sum (None)."""
    if layers is None:
        return "weighted_sum"
    return f"layer_{layers[0]}" if len(layers) == 1 else "layers_" + "-".join(map(str, layers))


def best_layer(rows: Sequence[dict[str, Any]], higher_is_better: bool) -> int:
    """The hidden state with the best dev metric (a non-finite value never wins; ties: the lowest index)."""
    sign = 1.0 if higher_is_better else -1.0
    return max(rows, key=lambda r: sign * r["dev"] if math.isfinite(r["dev"]) else -math.inf)["layer"]


def probe_task(spec: TaskSpec, choice: UpstreamChoice, source: FeatureSource, corpus_dir: Path, out_dir: Path,
               layers: list[int], cfg: ProbeConfig, weights: str) -> dict[str, Any]:
    """Every run of one (upstream, task): per hidden state, weighted sum, integration setups chosen on dev."""
    task_dir = out_dir / choice.label / spec.name

    def run(chosen: list[int] | None) -> dict[str, Any]:
        folder = task_dir / run_folder(chosen)
        setting = "null" if chosen is None else "[" + ", ".join(map(str, chosen)) + "]"
        row = run_pair(spec.name, choice, source, corpus_dir, folder, preset=cfg.preset,
                       overrides=[*cfg.overrides, f"layers={setting}"], weights=weights)
        record = {"layers": chosen, "dir": folder.relative_to(out_dir).as_posix(),
                  "dev": row["dev"][spec.metric], "test": row["test"][spec.metric]}
        return record if chosen is not None else {**record, "layer_weights": row["layer_weights"]}

    per_layer = [{"layer": k, **run([k])} for k in layers]
    weighted = run(None)
    best = best_layer(per_layer, spec.higher_is_better)
    setups = integration_setups(best, len(source.hidden_sizes))
    return {"metric": spec.metric, "higher_is_better": spec.higher_is_better,
            "percent": spec.shown_as_percent, "best_layer": best, "layers": per_layer,
            "weighted_sum": weighted,
            "integration": [{"name": name, **run(chosen)} for name, chosen in setups.items()]}


# -------------------------------------------------------------------------------------------- similarity

def probe_similarity(source: FeatureSource, label: str, corpus_dir: Path, out_dir: Path, cfg: ProbeConfig,
                     weights: str) -> dict[str, Any]:
    """The CKA table of one upstream on the dev split of `cfg.similarity_subset`, computed once."""
    folder = out_dir / label / "similarity"
    with OutputFolder(folder, "speechrep probe", {"upstream_weights": weights}):
        path = folder / "similarity.json"
        if path.is_file():
            return json.loads(path.read_text())
        cuts = load_cuts(corpus_dir, cfg.similarity_subset, "dev")
        result = {"subset": cfg.similarity_subset, "split": "dev",
                  **layer_similarity(source, cuts, cfg.max_frames, cfg.seed)}
        atomic_write_json(path, result)
    return result


# ------------------------------------------------------------------------------------------------ the sweep

def read_probe(out_dir: Path) -> dict[str, Any]:
    """The probe.json of `out_dir` (`{"upstreams": {}}` when there is none yet)."""
    path = Path(out_dir) / PROBE_FILE
    if not path.is_file():
        return {"upstreams": {}}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("upstreams"), dict):
        raise ConfigError(f"{path}: key 'upstreams' (upstream → tasks and CKA table) is missing")
    return summary


def probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Run the probe sweep of `cfg` into cfg.out (skipping finished runs); returns probe.json's content.

    Everything a user can get wrong (tasks, overrides, presets, upstreams, layers, the CKA subset) fails
    before the output folder is touched; every upstream is loaded first for that.
    """
    cfg.check()
    corpus_dir, out_dir = Path(cfg.corpus), Path(cfg.out)
    if not corpus_dir.is_dir():
        raise ConfigError(f"--corpus {corpus_dir}: no such folder (make one with `speechrep synth`)")
    specs = [get_task(task) for task in cfg.tasks]
    check_overrides(cfg.tasks, cfg.overrides)
    for spec in specs:
        load_task_config(spec, cfg.preset, cfg.overrides)
    manifest = corpus_dir / cfg.similarity_subset / "dev.jsonl.gz"
    found = manifest.is_file()
    if is_shar_dir(corpus_dir):  # a Shar directory (`speechrep shard`): its index names the split
        found = has_split(corpus_dir, cfg.similarity_subset, "dev")
        manifest = Path(f"{corpus_dir / INDEX_NAME}: {cfg.similarity_subset}/dev")
    if cfg.similarity and not found:
        raise ConfigError(f"--similarity-subset {cfg.similarity_subset}: no {manifest} (choose a subset with "
                          "phone and word alignments, or --no-similarity)")
    choices = [parse_upstream(name) for name in cfg.upstreams]
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--upstream: two upstreams share a name: {labels}")
    upstreams = [load_upstream_module(c) for c in choices]
    layer_lists = [parse_layers(cfg.layers, len(u.hidden_sizes)) for u in upstreams]

    with OutputFolder(out_dir, "speechrep probe", cfg.settings(), cfg.overwrite), disk_errors(out_dir):
        save_config(replace(cfg, overwrite=False), out_dir / "config.yaml")
        summary = read_probe(out_dir)
        device = resolve_device("auto")
        for choice, upstream, layers in zip(choices, upstreams, layer_lists):
            weights = upstream_identity(choice, upstream)
            entry = summary["upstreams"].setdefault(choice.label, {"upstream_weights": weights, "tasks": {}})
            if entry["upstream_weights"] != weights:
                raise OutputError(f"{out_dir / choice.label}: probed with other weights of {choice.label} "
                                  f"({entry['upstream_weights']}, now {weights}); use --overwrite to start "
                                  "over")
            entry["num_layers"] = len(upstream.hidden_sizes)
            source = FeatureSource(choice.label, upstream, cache_root=out_dir / "features", device=device)
            for spec in specs:
                log.info("probe: %s on %s, hidden states %s", choice.label, spec.name, layers)
                entry["tasks"][spec.name] = probe_task(spec, choice, source, corpus_dir, out_dir, layers, cfg,
                                                       weights)
                atomic_write_json(out_dir / PROBE_FILE, summary)
            if cfg.similarity:
                entry["similarity"] = probe_similarity(source, choice.label, corpus_dir, out_dir, cfg,
                                                       weights)
                atomic_write_json(out_dir / PROBE_FILE, summary)
    return summary


# ------------------------------------------------------------------------------------------------ the table

def _value(value: float, percent: bool) -> str:
    return f"{100.0 * value:.2f}" if percent else f"{value:.4g}"


def format_probe(summary: dict[str, Any]) -> str:
    """probe.json as Markdown tables: per upstream and task the runs (best dev layer starred), then the
    similarity tables."""
    lines: list[str] = []
    for label, entry in summary["upstreams"].items():
        for task, t in entry["tasks"].items():
            unit = " (%)" if t["percent"] else ""
            lines += [f"{label} on {task}: {t['metric']}{unit} {'↑' if t['higher_is_better'] else '↓'}, "
                      f"best layer on dev: {t['best_layer']}", "",
                      "| run | layers | dev | test |", "|---|---|---|---|"]
            rows = [(f"layer {r['layer']}" + (" *" if r["layer"] == t["best_layer"] else ""), r)
                    for r in t["layers"]]
            rows += [("weighted sum", t["weighted_sum"])] + [(r["name"], r) for r in t["integration"]]
            lines += [f"| {name} | {'all' if r['layers'] is None else ','.join(map(str, r['layers']))} | "
                      f"{_value(r['dev'], t['percent'])} | {_value(r['test'], t['percent'])} |"
                      for name, r in rows]
            lines.append("")
        similarity = entry.get("similarity")
        if similarity:
            lines += similarity_lines(label, similarity)
    return "\n".join(lines)


def similarity_lines(label: str, similarity: dict[str, Any]) -> list[str]:
    """The similarity tables of one upstream: CKA, then SVCCA and PWCCA with their shuffled-frames level."""
    values = similarity["targets"]
    targets = [name for name in TARGETS if values.get(name) is not None]
    pitch = f", pitch on its {similarity['pitch_frames']} voiced ones" if "pitch_frames" in similarity else ""
    lines = [f"{label}: similarity of each hidden state with each target, {similarity['frames']} frames of "
             f"{similarity['subset']}/{similarity['split']}{pitch}", ""]
    tables = [("linear CKA (unbiased)", values, None)]
    tables += [(f"{name.upper()} (chance: the target's frames shuffled, the most over layers)",
                similarity["cca"][name], similarity["cca"].get(f"chance:{name}"))
               for name in ("svcca", "pwcca") if name in similarity.get("cca", {})]
    for title, table, chance in tables:
        lines += [title, "", "| layer | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(f"{table[name][k]:.3f}" for name in targets) + " |"
                  for k in range(len(values[targets[0]]))]
        if chance:
            lines.append("| chance | " + " | ".join(f"{max(chance[name]):.3f}" for name in targets) + " |")
        lines.append("")
    lines += [f"({name}: {why})" for name, why in similarity.get("missing", {}).items()]
    return lines + ([""] if similarity.get("missing") else [])

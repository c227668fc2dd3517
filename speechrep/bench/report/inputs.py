"""The report's inputs: a benchmark's results.json, its run directories, pre-training runs, demo.json, and a
probe's probe.json (`speechrep probe`; a probe folder alone is reportable: its weighted-sum runs are the
rows)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechrep.analysis.probe import PROBE_FILE, read_probe
from speechrep.bench.report.compression import CompressionLine, read_compression
from speechrep.bench.report.sequence import SequencePoint, read_sequence
from speechrep.bench.score import Reference, superb_scores
from speechrep.config import parse_yaml
from speechrep.errors import ConfigError
from speechrep.train.run_dir import read_metrics

log = logging.getLogger(__name__)

RANDOM_SUFFIX = "@random"  # the runner's name for an untrained control (same architecture, random weights)
_ROW_KEYS = ("upstream", "task", "metric", "higher_is_better", "test")


@dataclass
class RunDir:
    """One training run directory as the report sees it: resolved config, logged metrics, final results."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    results: dict[str, Any] | None = None

    def curve(self, event: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one logged scalar, e.g. ("eval", "loss")."""
        points = [(r["step"], r[key]) for r in self.metrics if r.get("event") == event and key in r]
        steps, values = zip(*points) if points else ((), ())
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


@dataclass
class ReportInputs:
    """Everything the page is built from."""

    root: Path
    bench_dir: Path
    rows: list[dict[str, Any]]
    scores: dict[str, float]
    references: dict[str, Reference]
    pretrain: dict[str, RunDir] = field(default_factory=dict)  # name → pre-training run
    demo: dict[str, Any] | None = None
    kmeans: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → kmeans.json of its targets
    bench_config: dict[str, Any] = field(default_factory=dict)  # the benchmark's saved config.yaml
    probe: dict[str, Any] | None = None  # probe.json of RESULTS_DIR (see analysis.probe)
    compression: list[CompressionLine] = field(default_factory=list)  # benchmarked compress steps, by method
    sequence: list[SequencePoint] = field(default_factory=list)  # MelHuBERTs, when one is compressed


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def read_run_dir(path: Path) -> RunDir:
    """A run directory's config.yaml (with its provenance block), metrics.jsonl and results.json if present."""
    config_path = path / "config.yaml"
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = parse_yaml(config_path.read_text()) or {}
        except Exception as e:  # noqa: BLE001 - any YAML error: the run is still worth showing
            log.warning("%s: unreadable YAML (%s), shown without its config", config_path, e)
    results_path = path / "results.json"
    results = _read_json(results_path) if results_path.is_file() else None
    return RunDir(path, config if isinstance(config, dict) else {}, read_metrics(path),
                  results)


def find_bench_dir(results_dir: Path) -> Path:
    """The benchmark OUT dir: RESULTS_DIR itself or RESULTS_DIR/bench (a demo dir)."""
    for candidate in (results_dir, results_dir / "bench"):
        if (candidate / "results.json").is_file():
            return candidate
    raise ConfigError(f"{results_dir}: no results.json here or in {results_dir / 'bench'}, nor a probe.json "
                      "(run `speechrep benchmark`, `speechrep probe` or `speechrep demo` first)")


def read_summary(results_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(the benchmark folder, its checked results.json) of a benchmark --out or a demo folder."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir}: no such folder")
    bench_dir = find_bench_dir(results_dir)
    summary_path = bench_dir / "results.json"
    summary = _read_json(summary_path)
    if not isinstance(summary, dict) or not isinstance(summary.get("rows"), list):
        raise ConfigError(f"{summary_path}: key 'rows' (a list of upstream × task results) is missing")
    rows = summary["rows"]
    if not rows:
        raise ConfigError(f"{summary_path}: 'rows' is empty, nothing to report")
    for i, row in enumerate(rows):
        missing = [k for k in _ROW_KEYS if k not in row] if isinstance(row, dict) else list(_ROW_KEYS)
        if missing:
            raise ConfigError(f"{summary_path}: rows[{i}] lacks key {missing[0]!r}")
        if row["metric"] not in (row["test"] or {}):
            raise ConfigError(f"{summary_path}: rows[{i}] ({row['upstream']}/{row['task']}) has no test "
                              f"value for its metric {row['metric']!r}")
    return bench_dir, summary


def probe_summary(probe_dir: Path, probe: Mapping[str, Any]) -> dict[str, Any]:
    """A probe folder as a benchmark summary: the results.json of each upstream × task's weighted-sum run,
    which remembers its run folder (`pair_dir`)."""
    rows = []
    for entry in probe["upstreams"].values():
        for task in entry.get("tasks", {}).values():
            path = probe_dir / task["weighted_sum"]["dir"] / "results.json"
            if path.is_file():
                rows.append({**_read_json(path), "pair_dir": str(path.parent)})
    if not rows:
        raise ConfigError(f"{probe_dir / PROBE_FILE}: no finished weighted-sum run, nothing to report")
    return {"rows": rows}


def merge_benchmarks(summaries: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Several benchmark folders' summaries as one: their rows, scored against the first folder's references.

    Each row remembers its folder and its own upstream label (`run_root`, `run_label`: where its run
    directories are). When the folders tuned their upstreams differently, every label gains its strategy
    (`melhubert [houlsby]`), so one upstream tuned several ways gets one line per strategy."""
    tunings = {str(r.get("tuning", "frozen")) for _, summary in summaries for r in summary["rows"]}
    rows: list[dict[str, Any]] = []
    for bench_dir, summary in summaries:
        for row in summary["rows"]:
            label = f"{row['upstream']} [{row.get('tuning', 'frozen')}]" if len(tunings) > 1 else row["upstream"]
            rows.append({**row, "upstream": label, "run_label": row["upstream"], "run_root": str(bench_dir)})
    pairs = [(r["upstream"], r["task"]) for r in rows]
    if len(set(pairs)) != len(pairs):
        twice = next(p for p in pairs if pairs.count(p) > 1)
        raise ConfigError(f"{twice[0]} on {twice[1]} is in more than one of the given benchmark folders")
    references = summaries[0][1].get("references") or {}
    refs = {task: Reference(float(r["baseline"]), float(r["topline"])) for task, r in references.items()}
    return {"rows": rows, "references": references, "scores": superb_scores(rows, refs) if refs else {}}


def load_inputs(results_dir: Path, more: Sequence[Path] = ()) -> ReportInputs:
    """Read the benchmark summary, the pre-training runs and demo.json under `results_dir`; the rows of `more`
    benchmark folders join its table (e.g. one folder per tuning strategy)."""
    results_dir = Path(results_dir)
    probe = read_probe(results_dir) if (results_dir / PROBE_FILE).is_file() else None
    benchmarked = any((d / "results.json").is_file() for d in (results_dir, results_dir / "bench"))
    if probe is not None and not benchmarked:
        bench_dir, summary = results_dir, probe_summary(results_dir, probe)
    else:
        bench_dir, summary = read_summary(results_dir)
    if more:
        summary = merge_benchmarks([(bench_dir, summary), *(read_summary(d) for d in more)])
    rows = summary["rows"]
    references = {task: Reference(float(r["baseline"]), float(r["topline"]))
                  for task, r in (summary.get("references") or {}).items()}
    pretrain_root = results_dir / "pretrain"
    pretrain = {}
    if pretrain_root.is_dir():
        for run in sorted(p for p in pretrain_root.iterdir() if p.is_dir()):
            if (run / "config.yaml").is_file() or (run / "metrics.jsonl").is_file():
                pretrain[run.name] = read_run_dir(run)
    demo_path = results_dir / "demo.json"
    demo = _read_json(demo_path) if demo_path.is_file() else None
    kmeans = {path.parent.name: _read_json(path) for path in sorted(results_dir.glob("kmeans/*/kmeans.json"))}
    return ReportInputs(results_dir, bench_dir, rows, dict(summary.get("scores") or {}), references, pretrain,
                        demo, kmeans, read_run_dir(bench_dir).config, probe,
                        read_compression(rows, bench_dir), read_sequence(rows, bench_dir))


# ------------------------------------------------------------------------------------------- table values

def upstream_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Upstreams in the order the benchmark ran them."""
    return list(dict.fromkeys(r["upstream"] for r in rows))


def task_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tasks in the order the benchmark ran them."""
    return list(dict.fromkeys(r["task"] for r in rows))


def layer_weight_matrix(rows: Sequence[Mapping[str, Any]], upstream: str) -> tuple[list[str], np.ndarray]:
    """(tasks, weights) of one upstream: row t holds the task's learned layer weights (NaN-padded if shorter)."""
    mine = [r for r in rows if r["upstream"] == upstream and r.get("layer_weights")]
    if not mine:
        return [], np.zeros((0, 0))
    width = max(len(r["layer_weights"]) for r in mine)
    matrix = np.full((len(mine), width), np.nan)
    for i, r in enumerate(mine):
        matrix[i, : len(r["layer_weights"])] = r["layer_weights"]
    return [r["task"] for r in mine], matrix


def pair_run_dirs(bench_dir: Path, row: Mapping[str, Any]) -> list[Path]:
    """The run dirs of a pair's selected learning rate: one per sub-run (ER folds), or the pair dir itself
    (under the row's own benchmark folder when the report joins several; a probe's row names its folder)."""
    pair_dir = Path(row["pair_dir"]) if "pair_dir" in row else \
        Path(row.get("run_root", bench_dir)) / row.get("run_label", row["upstream"]) / row["task"]
    lr = row.get("lr")
    lr_dir = pair_dir / f"lr{float(lr):g}" if lr is not None else pair_dir
    base = lr_dir if lr_dir.is_dir() else pair_dir
    names = list(row.get("sub_runs") or {"main": None})
    dirs = [base if name == "main" else base / name for name in names]
    return [d for d in dirs if d.is_dir()]


def downstream_curve(bench_dir: Path, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, dev metric) of a pair, averaged over its sub-runs at the steps they all evaluated."""
    curves = [RunDir(d, {}, read_metrics(d)).curve("eval", row["metric"])
              for d in pair_run_dirs(bench_dir, row)]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    steps = curves[0][0]
    for other, _ in curves[1:]:
        steps = np.intersect1d(steps, other)
    values = np.mean([v[np.searchsorted(s, steps)] for s, v in curves], axis=0)
    return steps, values

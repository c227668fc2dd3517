"""The static HTML report of a benchmark or demo run: one page that opens from disk, plots embedded as PNG.

    path = write_report(Path("demo_out"))          # → demo_out/report.html
    speechrep report demo_out [--out FILE]

RESULTS_DIR is a benchmark OUT dir (`results.json`, `<upstream>/<task>/...`, see downstream.runner) or a demo
dir holding one in `bench/`, pre-training run dirs in `pretrain/<name>/` and `demo.json` (commands and wall
times per stage, see bench.demo). The page shows the leaderboard (test metrics, dev metrics, the SUPERB-style
score), the score per upstream as a bar chart, each upstream's learned layer weights per task as a heat map,
the pre-training curves (train and dev loss vs step), the downstream curves (dev metric vs step, one panel per
task) and the provenance (commands, configs, package versions, git revisions, wall times). It reads only files
written by finished or running jobs; it never trains or evaluates anything.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from speechrep.bench.leaderboard import format_metric, is_rate
from speechrep.bench.score import Reference, task_score
from speechrep.config import PROVENANCE_KEY, parse_yaml
from speechrep.storage import atomic_write_text
from speechrep.errors import ConfigError

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
RANDOM_SUFFIX = "@random"  # the runner's name for an untrained control (same architecture, random weights)
_ROW_KEYS = ("upstream", "task", "metric", "higher_is_better", "test")


# --------------------------------------------------------------------------------------------------- inputs

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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def read_metrics_lines(path: Path) -> list[dict[str, Any]]:
    """The events of a `metrics.jsonl`; a line a killed run left half-written is skipped with a warning."""
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d: not JSON, skipped", path, number)
            continue
        if isinstance(event, dict) and "step" in event:
            events.append(event)
    return events


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
    return RunDir(path, config if isinstance(config, dict) else {}, read_metrics_lines(path / "metrics.jsonl"),
                  results)


def find_bench_dir(results_dir: Path) -> Path:
    """The benchmark OUT dir: RESULTS_DIR itself or RESULTS_DIR/bench (a demo dir)."""
    for candidate in (results_dir, results_dir / "bench"):
        if (candidate / "results.json").is_file():
            return candidate
    raise ConfigError(f"{results_dir}: no results.json here or in {results_dir / 'bench'} "
                      "(run `speechrep benchmark` or `speechrep demo` first)")


def load_inputs(results_dir: Path) -> ReportInputs:
    """Read the benchmark summary, the pre-training runs and demo.json under `results_dir`."""
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
                        demo, kmeans)


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
    """The run dirs of a pair's selected learning rate: one per sub-run (ER folds), or the pair dir itself."""
    pair_dir = bench_dir / row["upstream"] / row["task"]
    lr = row.get("lr")
    lr_dir = pair_dir / f"lr{float(lr):g}" if lr is not None else pair_dir
    base = lr_dir if lr_dir.is_dir() else pair_dir
    names = list(row.get("sub_runs") or {"main": None})
    dirs = [base if name == "main" else base / name for name in names]
    return [d for d in dirs if d.is_dir()]


def downstream_curve(bench_dir: Path, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, dev metric) of a pair, averaged over its sub-runs at the steps they all evaluated."""
    curves = [RunDir(d, {}, read_metrics_lines(d / "metrics.jsonl")).curve("eval", row["metric"])
              for d in pair_run_dirs(bench_dir, row)]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    steps = curves[0][0]
    for other, _ in curves[1:]:
        steps = np.intersect1d(steps, other)
    values = np.mean([v[np.searchsorted(s, steps)] for s, v in curves], axis=0)
    return steps, values


# --------------------------------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    # The object API with the Agg canvas: no pyplot global state, no display, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def upstream_colors(upstreams: Sequence[str]) -> dict[str, Any]:
    """One colour per model: an untrained control shares its pre-trained model's colour."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    bases = list(dict.fromkeys(u.removesuffix(RANDOM_SUFFIX) for u in upstreams))
    return {u: palette[bases.index(u.removesuffix(RANDOM_SUFFIX)) % len(palette)] for u in upstreams}


def plot_scores(scores: Mapping[str, float], upstreams: Sequence[str]) -> str:
    """Horizontal bars of the SUPERB-style score per upstream (controls hatched); a PNG data URI."""
    names = [u for u in upstreams if u in scores]
    colors = upstream_colors(upstreams)
    fig = _figure(7.0, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    values = np.array([scores[u] for u in names])
    bars = ax.barh(y, values, color=[colors[u] for u in names], edgecolor="black", linewidth=0.5)
    for bar, name in zip(bars, names):
        if name.endswith(RANDOM_SUFFIX):
            bar.set_hatch("//")
            bar.set_alpha(0.55)
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], padding=3, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("SUPERB-style score (baseline = 0, topline = 1000)")
    ax.margins(x=0.15)
    return _png_data_uri(fig)


def plot_layer_weights(upstream: str, tasks: Sequence[str], matrix: np.ndarray) -> str:
    """Heat map tasks × layers of one upstream's learned layer weights; a PNG data URI."""
    n_tasks, n_layers = matrix.shape
    fig = _figure(max(4.5, 0.5 * n_layers + 2.5), 0.42 * n_tasks + 1.5)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0.0,
                      vmax=max(float(np.nanmax(matrix)), 1e-6))
    if n_layers <= 25:  # the numbers stay readable up to about base-size models
        peak = np.nanmax(matrix)
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 * peak else "white")
    ax.set_xticks(np.arange(n_layers))
    ax.set_yticks(np.arange(n_tasks), tasks)
    ax.set_xlabel("hidden state (0 = input of the first context layer)")
    ax.set_title(f"{upstream}: learned layer weights", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9)
    return _png_data_uri(fig)


def accuracy_key(run: RunDir) -> str | None:
    """The first accuracy-like dev scalar a pre-training run logs (e.g. HuBERT's masked_acc), if any."""
    keys = dict.fromkeys(k for r in run.metrics if r.get("event") == "eval" for k in r)
    return next((k for k in keys if "acc" in k), None)


def plot_pretrain_curves(name: str, run: RunDir) -> str | None:
    """Train and dev loss vs step of one pre-training run, beside its dev accuracy when it logs one; a PNG
    data URI (None without logged losses)."""
    train_steps, train_loss = run.curve("train", "loss")
    dev_steps, dev_loss = run.curve("eval", "loss")
    if not len(train_steps) and not len(dev_steps):
        return None
    acc = accuracy_key(run)
    fig = _figure(9.5 if acc else 6.5, 3.2)
    ax, *rest = fig.subplots(1, 2 if acc else 1, squeeze=False, width_ratios=[3, 2] if acc else None)[0]
    if len(train_steps):
        ax.plot(train_steps, train_loss, color="tab:blue", linewidth=1.0, alpha=0.8, label="train loss")
    if len(dev_steps):
        ax.plot(dev_steps, dev_loss, color="tab:orange", marker="o", markersize=3, linewidth=1.5,
                label="dev loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    method = (run.results or {}).get("method")
    fig.suptitle(f"{name} ({method})" if method else name, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if acc:
        steps, values = run.curve("eval", acc)
        rest[0].plot(steps, 100.0 * values, color="tab:green", marker="o", markersize=3, linewidth=1.5)
        rest[0].set_xlabel("step")
        rest[0].set_ylabel(f"dev {acc} (%)")
        rest[0].grid(alpha=0.3)
    return _png_data_uri(fig)


def plot_downstream_curves(bench_dir: Path, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Small multiples, one panel per task: dev metric vs step, one line per upstream; a PNG data URI."""
    tasks, upstreams = task_order(rows), upstream_order(rows)
    colors = upstream_colors(upstreams)
    curves = {(r["upstream"], r["task"]): (r, downstream_curve(bench_dir, r)) for r in rows}
    if not any(len(steps) for _, (steps, _) in curves.values()):
        return None
    columns = min(3, len(tasks))
    grid_rows = math.ceil(len(tasks) / columns)
    fig = _figure(4.0 * columns, 2.9 * grid_rows + 0.6)
    axes = fig.subplots(grid_rows, columns, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        unit = ""
        for upstream in upstreams:
            if (upstream, task) not in curves:
                continue
            row, (steps, values) = curves[upstream, task]
            scale, unit = (100.0, " (%)") if is_rate(row) else (1.0, "")
            if len(steps):
                ax.plot(steps, scale * values, color=colors[upstream], marker="o", markersize=2.5,
                        linewidth=1.2, linestyle="--" if upstream.endswith(RANDOM_SUFFIX) else "-",
                        label=upstream)
        metric = next(r["metric"] for r in rows if r["task"] == task)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(f"dev {metric}{unit}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no training curve\n(evaluated only)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes:
        for line in ax.lines:
            handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 6), fontsize=8)
    return _png_data_uri(fig)


# ---------------------------------------------------------------------------------------------------- HTML

def esc(value: Any) -> str:
    """Any value as HTML-escaped text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], body: Iterable[Sequence[str]], css: str = "") -> str:
    """An HTML table; header cells are escaped here, body cells must already be HTML (escaped <td>s)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    lines = "\n".join(f"<tr>{''.join(cells)}</tr>" for cells in body)
    cls = f' class="{esc(css)}"' if css else ""
    return f"<table{cls}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{lines}\n</tbody>\n</table>"


def _td(text: Any, title: str | None = None, css: str | None = None) -> str:
    attrs = (f' title="{esc(title)}"' if title else "") + (f' class="{esc(css)}"' if css else "")
    return f"<td{attrs}>{esc(text)}</td>"


def _img(uri: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{esc(css)}" src="{uri}" alt="{esc(alt)}">'


def _column_header(row: Mapping[str, Any]) -> str:
    unit = " (%)" if is_rate(row) else ""
    return f"{row['task']} {row['metric']}{unit} {'↑' if row['higher_is_better'] else '↓'}"


def _best_by_task(rows: Sequence[Mapping[str, Any]], split: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in rows:
        value = float((r.get(split) or {}).get(r["metric"], math.nan))
        if not math.isfinite(value):
            continue
        sign = 1.0 if r["higher_is_better"] else -1.0
        if r["task"] not in best or sign * value > sign * best[r["task"]]:
            best[r["task"]] = value
    return best


def _steps_text(row: Mapping[str, Any]) -> str:
    subs = row.get("sub_runs") or {}
    parts = [f"{'' if name == 'main' else name + ' '}best step {s.get('best_step')}/{s.get('steps')}"
             for name, s in subs.items()]
    return ", ".join(parts)


def leaderboard_html(inputs: ReportInputs) -> str:
    """The test-metric table (dev metric, LR, steps and task score in each cell's tooltip) and the dev table."""
    rows, tasks, upstreams = inputs.rows, task_order(inputs.rows), upstream_order(inputs.rows)
    by_pair = {(r["upstream"], r["task"]): r for r in rows}
    first_of_task = {t: next(r for r in rows if r["task"] == t) for t in tasks}
    header = ["upstream"] + [_column_header(first_of_task[t]) for t in tasks]
    tables = []
    for split in ("test", "dev"):
        best = _best_by_task(rows, split)
        body = []
        for up in upstreams:
            cells = [_td(up, css="name")]
            for task in tasks:
                row = by_pair.get((up, task))
                if row is None:
                    cells.append(_td("–", "not run"))
                    continue
                value = float((row.get(split) or {}).get(row["metric"], math.nan))
                tip = [f"{up} on {task}", f"dev {format_metric(row, 'dev')}", f"test {format_metric(row)}"]
                if row.get("lr") is not None:
                    tip.append(f"lr {float(row['lr']):g}")
                if _steps_text(row):
                    tip.append(_steps_text(row))
                ref = inputs.references.get(task)
                if split == "test" and ref is not None and ref.topline != ref.baseline and math.isfinite(value):
                    tip.append(f"task score {task_score(value, ref):.1f}")
                cells.append(_td(format_metric(row, split), " · ".join(tip),
                                 "best" if best.get(task) == value else None))
            if split == "test":
                score = inputs.scores.get(up)
                top = max(inputs.scores.values()) if inputs.scores else None
                cells.append(_td("–" if score is None else f"{score:.1f}",
                                 css="best" if score is not None and score == top else None))
            body.append(cells)
        tables.append(_table(header + (["score ↑"] if split == "test" else []), body, f"leaderboard {split}"))
    refs = ", ".join(f"{t}: baseline {r.baseline:.4g}, topline {r.topline:.4g}"
                     for t, r in inputs.references.items())
    return (f"<h3>Test (the checkpoint chosen on dev, evaluated once)</h3>\n{tables[0]}\n"
            "<p class=\"note\">Hover a cell for its dev value, learning rate, steps and task score. Bold: best "
            "per column. Score: each task's test metric scaled linearly from the baseline (0) to the topline "
            f"(1000), averaged over tasks. References: {esc(refs) if refs else 'none (no score)'}.</p>\n"
            f"<h3>Dev (model selection)</h3>\n{tables[1]}")


def controls_html(inputs: ReportInputs) -> str:
    """Pre-trained model minus its untrained control (same architecture, random weights): score and tasks."""
    upstreams, tasks = upstream_order(inputs.rows), task_order(inputs.rows)
    pairs = [(u, u + RANDOM_SUFFIX) for u in upstreams if u + RANDOM_SUFFIX in upstreams]
    if not pairs:
        return ""
    by_pair = {(r["upstream"], r["task"]): r for r in inputs.rows}
    body = []
    for trained, control in pairs:
        score_a, score_b = inputs.scores.get(trained), inputs.scores.get(control)
        cells = [_td(trained, css="name"),
                 _td("–" if score_a is None or score_b is None else f"{score_a - score_b:+.1f}")]
        for task in tasks:
            a, b = by_pair.get((trained, task)), by_pair.get((control, task))
            if a is None or b is None:
                cells.append(_td("–"))
                continue
            diff = float(a["test"][a["metric"]]) - float(b["test"][b["metric"]])
            scale = 100.0 if is_rate(a) else 1.0
            better = diff > 0 if a["higher_is_better"] else diff < 0
            cells.append(_td(f"{scale * diff:+.2f}", css="gain" if better else "loss" if diff else None))
        body.append(cells)
    first_of_task = {t: next(r for r in inputs.rows if r["task"] == t) for t in tasks}
    header = ["pre-trained", "score Δ"] + [_column_header(first_of_task[t]) + " Δ" for t in tasks]
    return ("<h3>What pre-training added: each model minus its untrained control</h3>\n"
            + _table(header, body, "controls")
            + "\n<p class=\"note\">Green: the pre-trained model is better on that task's test metric.</p>")


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        return [item for k, v in data.items() for item in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), json.dumps(data) if not isinstance(data, str) else data)]


def _config_items(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A config as `key.sub = value` pairs, without its provenance block."""
    return _flatten({k: v for k, v in config.items() if k != PROVENANCE_KEY})


def _config_details(summary: str, config: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    text = "\n".join(f"{k} = {v}" for k, v in _config_items(config))
    more = f"<p>Differing values:</p><pre>{esc(chr(10).join(extra))}</pre>" if extra else ""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre>{more}</details>"


def kmeans_html(kmeans: Mapping[str, Mapping[str, Any]]) -> str:
    """The k-means targets of HuBERT-style runs: features, clusters in use and label quality on dev."""
    body = []
    for name, report in kmeans.items():
        splits = report.get("splits") or {}
        quality = (splits.get("dev") or splits.get("train") or {}).get("label_quality") or {}
        cells = [_td(name, css="name"), _td(report.get("describe", report.get("features", "–"))),
                 _td(f"{report.get('used_clusters', '–')} / {report.get('k', '–')}")]
        cells += [_td(f"{quality[k]:.3f}" if k in quality else "–")
                  for k in ("phone_purity", "cluster_purity", "pnmi")]
        body.append(cells)
    return ("<h3>k-means targets</h3>\n" + _table(
        ["targets", "features", "clusters used / k", "phone purity", "cluster purity", "PNMI"], body, "kmeans")
        + "\n<p class=\"note\">Label quality against the phone alignments of the dev split (train where there "
        "is no dev); higher is better.</p>")


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _seconds(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def provenance_html(inputs: ReportInputs) -> str:
    """Commands and wall times (demo.json), package versions and git revisions, every run's config."""
    parts = []
    stages = (inputs.demo or {}).get("stages") or {}
    if stages:
        body = [[_td(name, css="name"), f"<td><code>{esc(s.get('command', ''))}</code></td>",
                 _td(_seconds(s.get("wall_time_s")))] for name, s in stages.items()]
        total = sum(float(s.get("wall_time_s") or 0.0) for s in stages.values())
        body.append([_td("total", css="name"), "<td></td>", _td(_seconds(total))])
        if inputs.demo.get("wall_time_s"):  # lanes run side by side: less than the sum of the stages
            body.append([_td("wall clock", css="name"), "<td></td>", _td(_seconds(inputs.demo["wall_time_s"]))])
        parts.append("<h3>Commands (each stage, as it can be re-run on its own)</h3>\n"
                     + _table(["stage", "command", "wall time"], body, "commands"))
        if inputs.demo.get("config"):
            parts.append(_config_details("demo configuration", inputs.demo["config"]))

    downstream_runs = {(r["upstream"], r["task"]): [read_run_dir(d) for d in pair_run_dirs(inputs.bench_dir, r)]
                       for r in inputs.rows}
    all_runs = list(inputs.pretrain.values()) + [run for runs in downstream_runs.values() for run in runs]
    versions: dict[str, set[str]] = {}
    revisions: dict[str, int] = {}
    seeds: set[Any] = set()
    for run in all_runs:
        prov = run.config.get(PROVENANCE_KEY) or {}
        for package, version in (prov.get("versions") or {}).items():
            versions.setdefault(package, set()).add(str(version))
        if prov.get("git_revision") is not None:
            revisions[prov["git_revision"]] = revisions.get(prov["git_revision"], 0) + 1
        if prov.get("seed") is not None:
            seeds.add(prov["seed"])
    if versions or revisions:
        body = [[_td(p, css="name"), _td(", ".join(sorted(v)), css="warn" if len(v) > 1 else None)]
                for p, v in sorted(versions.items())]
        body += [[_td("git revision", css="name"), _td(f"{rev} ({n} runs)", css="warn" if len(revisions) > 1
                                                        else None)] for rev, n in revisions.items()]
        body.append([_td("seeds", css="name"), _td(", ".join(sorted(map(str, seeds))) or "–")])
        parts.append(f"<h3>Environment ({_count(len(all_runs), 'run directory', 'run directories')})</h3>\n"
                     + _table(["", "value"], body, "env")
                     + "\n<p class=\"note\">A value in orange differs between runs.</p>")

    if inputs.pretrain:
        body = []
        for name, run in inputs.pretrain.items():
            res = run.results or {}
            stage = stages.get(f"pretrain {name}") or {}
            dev = res.get("dev") or {}
            train_cfg = run.config.get("train") or {}
            body.append([_td(name, css="name"), _td(res.get("method", "–")),
                         _td(f"{res.get('steps', '–')} / {train_cfg.get('max_steps', '–')}"),
                         _td(res.get("best_dev_step", "–")),
                         _td(", ".join(f"{k} {v:.4g}" for k, v in dev.items()) or "–"),
                         _td(_seconds(stage.get("wall_time_s")))])
        parts.append("<h3>Pre-training runs</h3>\n" + _table(
            ["run", "method", "steps done / planned", "best dev step", "last dev scalars", "wall time"], body,
            "runs"))
        parts += [_config_details(f"config of {name} ({run.path})", run.config)
                  for name, run in inputs.pretrain.items() if run.config]

    body = []
    for r in inputs.rows:
        params = r.get("params") or {}
        body.append([_td(r["upstream"], css="name"), _td(r["task"]),
                     _td("–" if r.get("lr") is None else f"{float(r['lr']):g}"), _td(_steps_text(r) or "–"),
                     _td(f"{params.get('upstream', 0):,}"), _td(f"{params.get('trainable', 0):,}"),
                     _td(_seconds(r.get("wall_time_s")))])
    total = sum(float(r.get("wall_time_s") or 0.0) for r in inputs.rows)
    body.append([_td("total", css="name"), "<td></td>" * 5, _td(_seconds(total))])
    parts.append("<h3>Downstream runs</h3>\n" + _table(
        ["upstream", "task", "lr", "steps", "upstream params", "trainable params", "wall time"], body, "runs"))
    for task in task_order(inputs.rows):
        configs = [(run.path.relative_to(inputs.bench_dir).as_posix(), run.config)
                   for (_, t), runs in downstream_runs.items() if t == task for run in runs if run.config]
        if not configs:
            continue
        # One config per task, plus whatever a run changed (sub-runs differ by fold, sweeps by lr).
        reference = dict(_config_items(configs[0][1]))
        differing = sorted({f"{where}: {k} = {v}" for where, cfg in configs for k, v in _config_items(cfg)
                            if reference.get(k) != v})
        summary = f"config of {task} ({configs[0][0]}; {_count(len(configs), 'run directory', 'run directories')}" \
            + (", identical)" if not differing else f", {_count(len(differing), 'value')} differ)")
        parts.append(_config_details(summary, configs[0][1], differing))
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } th:first-child, td.name { text-align: left; } td.name { font-weight: 600; }
table.commands td, table.commands th, table.env td, table.env th { text-align: left; }
td.best { font-weight: 700; background: #eef6ee; } td[title] { cursor: help; }
td.gain { color: #176317; } td.loss { color: #9b1c1c; } td.warn { background: #fff2d9; }
.note { color: #555; font-size: 0.85em; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
img.plot { max-width: 100%; border: 1px solid #eee; } pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
code { font-size: 0.85em; word-break: break-all; }
"""


def render_report(inputs: ReportInputs) -> str:
    """The whole page as an HTML string (plots as base64 PNG, no external resource)."""
    rows, upstreams = inputs.rows, upstream_order(inputs.rows)
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)

    sections.append(("leaderboard", "Leaderboard", leaderboard_html(inputs) + "\n" + controls_html(inputs)))

    if inputs.scores:
        body = _img(plot_scores(inputs.scores, upstreams), "score per upstream")
    else:
        body = "<p>No score: the benchmark has no baseline row (fbank) and no given references.</p>"
    sections.append(("score", "Score per upstream", body))

    heat_maps, single_layer = [], []
    for up in upstreams:
        tasks, matrix = layer_weight_matrix(rows, up)
        if matrix.shape[1] > 1:
            heat_maps.append(_img(plot_layer_weights(up, tasks, matrix), f"layer weights of {up}"))
        else:
            single_layer.append(up)
    body = ("<p class=\"note\">The softmax weights of the learned weighted sum of hidden states (mean over "
            "sub-runs): which layers each task drew on. Uniform weights (1/L) mean the head did not prefer any "
            "layer.</p>\n" + f"<div class=\"plots\">{''.join(heat_maps)}</div>")
    if single_layer:
        body += f"\n<p class=\"note\">One layer only, nothing to weigh: {esc(', '.join(single_layer))}.</p>"
    sections.append(("layers", "Layer weights", body))

    if inputs.pretrain:
        plots, missing = [], []
        for name, run in inputs.pretrain.items():
            uri = plot_pretrain_curves(name, run)
            if uri is None:
                missing.append(name)
            else:
                plots.append(_img(uri, f"pre-training curves of {name}"))
        body = f"<div class=\"plots\">{''.join(plots)}</div>"
        if missing:
            body += f"\n<p class=\"note\">No logged loss yet: {esc(', '.join(missing))}.</p>"
        if inputs.kmeans:
            body += "\n" + kmeans_html(inputs.kmeans)
        sections.append(("pretraining", "Pre-training curves", body))

    uri = plot_downstream_curves(inputs.bench_dir, rows)
    body = ("<p class=\"note\">Dev metric vs step for every upstream on each task (mean over sub-runs; dashed: "
            "untrained controls). The test split is evaluated once, at the end, with the best-dev checkpoint.</p>"
            + (_img(uri, "downstream learning curves") if uri else "<p>No metrics.jsonl found.</p>"))
    sections.append(("downstream", "Downstream learning curves", body))
    sections.append(("provenance", "Provenance", provenance_html(inputs)))

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title, _ in sections)
    content = "\n".join(f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'
                        for anchor, title, body in sections)
    summary = (f"{_count(len(upstreams), 'upstream')} × {_count(len(task_order(rows)), 'task')}"
               + (f", {_count(len(inputs.pretrain), 'pre-training run')}" if inputs.pretrain else ""))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>speechrep report: {esc(inputs.root.resolve().name)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<header>\n<h1>speechrep report</h1>\n<p class=\"note\">{esc(summary)} · "
            f"{esc(inputs.root.resolve())} · generated {esc(generated)}</p>\n<nav>{nav}</nav>\n</header>\n"
            f"{content}\n</body>\n</html>\n")


def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Write the static HTML report of a benchmark OUT dir or a demo dir; returns its path (default
    RESULTS_DIR/report.html)."""
    inputs = load_inputs(Path(results_dir))
    path = Path(out) if out is not None else Path(results_dir) / REPORT_NAME
    atomic_write_text(path, render_report(inputs))
    log.info("report: %s", path)
    return path

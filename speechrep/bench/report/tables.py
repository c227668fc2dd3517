"""The report's HTML fragments: leaderboard, controls, k-means and provenance tables (all text escaped)."""
from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from speechrep.bench.leaderboard import format_metric, is_rate
from speechrep.bench.report.compression import ORIGINAL, compression_points
from speechrep.bench.report.inputs import (
    RANDOM_SUFFIX,
    ReportInputs,
    pair_run_dirs,
    read_run_dir,
    task_order,
    upstream_order,
)
from speechrep.bench.report.robustness import (
    clean_metrics,
    condition_order,
    condition_point,
    tested_rows,
    trained_on,
)
from speechrep.bench.score import task_score
from speechrep.config import PROVENANCE_KEY


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


def img_tag(uri: str, alt: str, css: str = "plot") -> str:
    """An <img> of a data URI with escaped alt text."""
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


def count_text(n: int, singular: str, plural: str | None = None) -> str:
    """`n` and the noun in the number it takes, e.g. "1 run", "3 runs"."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _seconds(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _millions(count: Any) -> str:
    return "–" if count is None else f"{int(count) / 1e6:.3f} M" if int(count) >= 10_000 else f"{int(count):,}"


def settings_html(inputs: ReportInputs) -> str:
    """How the benchmark ran (its saved config.yaml) and, per row, the tuning and what it trained."""
    parts = []
    cfg = inputs.bench_config
    if cfg:
        shown = [("tuning", cfg.get("tuning", "frozen")), ("preset", cfg.get("preset")),
                 ("corpus", cfg.get("corpus")), ("learning-rate sweep", cfg.get("lr_sweep")),
                 ("overrides", " ".join(cfg.get("overrides") or []) or None),
                 ("feature stores (--features)", ", ".join(map(str, cfg.get("features") or [])) or None),
                 ("feature cache", cfg.get("feature_cache"))]
        parts.append(_table(["setting", "value"], [[_td(k, css="name"), _td("–" if v is None else v)]
                                                    for k, v in shown], "settings"))
    else:
        parts.append("<p class=\"note\">No config.yaml in the benchmark folder (written by an older speechrep).</p>")
    body = []
    for r in inputs.rows:
        params = r.get("params") or {}
        weights = str(r.get("upstream_weights") or "–")
        body.append([_td(r["upstream"], css="name"), _td(r["task"]), _td(r.get("tuning", "frozen")),
                     _td(_millions(params.get("trainable"))), _td(_millions(params.get("upstream"))),
                     _td(weights[:16], title=weights)])
    parts.append("<p class=\"note\">What each row trained: the tuning strategy, its trainable parameters (head, "
                 "layer weights and whatever the strategy trains of the upstream) against the upstream's size, and "
                 "the fingerprint of the upstream weights the row was computed with.</p>\n"
                 + _table(["upstream", "task", "tuning", "trainable", "upstream params", "weights"], body, "rows"))
    return "\n".join(parts)


def tuning_html(inputs: ReportInputs) -> str:
    """Per upstream line: the tuning strategy, the upstream parameters it trains (and their share), the size of
    a task's checkpoint, the training share, and the test metric of every task next to it."""
    tasks = task_order(inputs.rows)
    by_pair = {(r["upstream"], r["task"]): r for r in inputs.rows}
    first_of_task = {t: next(r for r in inputs.rows if r["task"] == t) for t in tasks}
    body = []
    for up in upstream_order(inputs.rows):
        mine = [r for r in inputs.rows if r["upstream"] == up]
        params = [r.get("params") or {} for r in mine]
        tuned = max((p.get("tuned", 0) for p in params), default=0)
        size = max((p.get("checkpoint_bytes", 0) for p in params), default=0)
        base = max((p.get("upstream", 0) for p in params), default=0)
        cuts = [f"{t} {by_pair[up, t]['train_cuts']}" for t in tasks
                if (up, t) in by_pair and by_pair[up, t].get("train_cuts") is not None]
        cells = [_td(up, css="name"), _td(mine[0].get("tuning", "frozen")), _td(_millions(tuned)),
                 _td(f"{100.0 * tuned / base:.3g} %" if base else "–"),
                 _td(f"{size / 2**20:.2f} MB" if size else "–", "largest of its tasks' checkpoints"),
                 _td(", ".join(cuts) or "–")]
        cells += [_td(format_metric(by_pair[up, t]) if (up, t) in by_pair else "–") for t in tasks]
        body.append(cells)
    header = ["upstream", "tuning", "tuned params", "share of upstream", "checkpoint", "train cuts"]
    return ("<p class=\"note\">What each strategy trains of the upstream (inserted modules included; the head "
            "and layer weights are not counted), its share of the upstream's parameters, the size of the "
            "trained state a task's checkpoint keeps (head, layer weights and the tuned parameters: the "
            "upstream itself is not stored), the training utterances (fewer with <code>train_fraction=</code>) "
            "and the test metrics.</p>\n"
            + _table(header + [_column_header(first_of_task[t]) for t in tasks], body, "tuning"))


def _significant(value: float | None, scale: float, title: str) -> str:
    """A <td> of value / scale with 4 significant digits ("–" when unknown)."""
    return _td("–" if value is None else f"{value / scale:.4g}", title)


def _train_text(train: Any) -> str | None:
    """A step's training after compression in a tooltip: its scalar entries, shortened."""
    if not train:
        return None
    if not isinstance(train, Mapping):
        return f"trained: {train}"[:200]
    items = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in train.items()
             if isinstance(v, (int, float, str))]
    return ("trained after compression: " + (", ".join(items) or "yes"))[:200]


def compression_html(inputs: ReportInputs) -> str:
    """Per benchmarked compress step (and the original its line starts from): method, keep fraction,
    parameters, MACs per audio second and the test metric of every task."""
    tasks = task_order(inputs.rows)
    by_pair = {(r["upstream"], r["task"]): r for r in inputs.rows}
    first_of_task = {t: next(r for r in inputs.rows if r["task"] == t) for t in tasks}
    body, sparse = [], False
    for point in compression_points(inputs.compression):
        sparse = sparse or point.sparse
        share = (f"{100.0 * point.params / point.original_params:.3g} % of the original"
                 if point.params is not None and point.original_params else None)
        params_tip = " · ".join(filter(None, [share, f"{point.dense_params:,} dense" if point.params
                                              != point.dense_params and point.dense_params else None]))
        macs_tip = (f"{point.dense_macs_per_second / 1e6:.4g} MMACs dense" if point.macs_per_second
                    != point.dense_macs_per_second and point.dense_macs_per_second else None)
        cells = [_td(point.upstream, css="name"), _td(point.method),
                 _td("–" if point.method == ORIGINAL else f"{point.keep:g}",
                     _train_text(point.train)),
                 _significant(point.params, 1e6, params_tip or None),
                 _significant(point.macs_per_second, 1e6, macs_tip)]
        cells += [_td(format_metric(by_pair[point.upstream, t]) if (point.upstream, t) in by_pair else "–")
                  for t in tasks]
        body.append(cells)
    header = ["upstream", "method", "keep", "params (M)", "MMACs per audio second"]
    note = ("<p class=\"note\">The benchmarked <code>speechrep compress</code> steps beside the original "
            "they were compressed from (<code>compress.json</code> of each step's folder: parameters and "
            "multiply-accumulates per second of audio, counted on one 1 s utterance). A step without its "
            "compress.json has no sizes and is on no line of the plots.")
    if sparse:
        note += (" For unstructured pruning, parameters are the weights left after masking and MACs those of "
                 "the nonzero weights only: sparsity does not speed up dense kernels, so its wall time stays "
                 "that of the dense model (hover a cell for the dense count).")
    return (note + "</p>\n"
            + _table(header + [_column_header(first_of_task[t]) for t in tasks], body, "compression"))


def _shown_path(path: Path, bench_dir: Path) -> str:
    """A run directory relative to the benchmark folder, or in full when it lies in another joined folder."""
    return path.relative_to(bench_dir).as_posix() if path.is_relative_to(bench_dir) else path.as_posix()


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
        parts.append(f"<h3>Environment ({count_text(len(all_runs), 'run directory', 'run directories')})</h3>\n"
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
        configs = [(_shown_path(run.path, inputs.bench_dir), run.config)
                   for (_, t), runs in downstream_runs.items() if t == task for run in runs if run.config]
        if not configs:
            continue
        # One config per task, plus whatever a run changed (sub-runs differ by fold, sweeps by lr).
        reference = dict(_config_items(configs[0][1]))
        differing = sorted({f"{where}: {k} = {v}" for where, cfg in configs for k, v in _config_items(cfg)
                            if reference.get(k) != v})
        summary = f"config of {task} ({configs[0][0]}; {count_text(len(configs), 'run directory', 'run directories')}" \
            + (", identical)" if not differing else f", {count_text(len(differing), 'value')} differ)")
        parts.append(_config_details(summary, configs[0][1], differing))
    return "\n".join(parts)


def _probe_value(value: float, percent: bool) -> str:
    return f"{100.0 * value:.2f}" if percent else f"{value:.3f}"


def layer_analysis_html(probe: Mapping[str, Any]) -> str:
    """Per upstream and task of a probe: the best hidden state on dev and the test metric of it, of the
    weighted sum and of the two integration setups (their layers in the tooltip)."""
    body = []
    for upstream, entry in probe["upstreams"].items():
        for task, t in entry.get("tasks", {}).items():
            best = next(r for r in t["layers"] if r["layer"] == t["best_layer"])
            percent, arrow = t["percent"], "↑" if t["higher_is_better"] else "↓"
            cells = [_td(upstream, css="name"), _td(task),
                     _td(f"{t['metric']}{' (%)' if percent else ''} {arrow}"), _td(t["best_layer"]),
                     _td(_probe_value(best["test"], percent), f"dev {_probe_value(best['dev'], percent)}"),
                     _td(_probe_value(t["weighted_sum"]["test"], percent))]
            cells += [_td(_probe_value(r["test"], percent), f"hidden states {r['layers']}")
                      for r in t["integration"]]
            body.append(cells)
    names = list(dict.fromkeys(r["name"] for e in probe["upstreams"].values()
                               for t in e.get("tasks", {}).values() for r in t["integration"]))
    header = ["upstream", "task", "metric", "best layer (dev)", "best layer", "weighted sum", *names]
    return (_table(header, body, "probe")
            + "\n<p class=\"note\">Test metric of each run (its checkpoint chosen on dev). The best layer is "
            "chosen on dev; <code>first2+best</code> combines hidden states 0, 1 and the best one, "
            "<code>best±1</code> the best one and its neighbours, each with a learned weighted sum (hover a "
            "cell for its layers).</p>")


def sequence_html(inputs: ReportInputs) -> str:
    """Per benchmarked MelHuBERT: output frame rate, segmentation, pre-training targets, layers, MACs per audio
    second and the test metric of every task."""
    tasks = task_order(inputs.rows)
    by_pair = {(r["upstream"], r["task"]): r for r in inputs.rows}
    first_of_task = {t: next(r for r in inputs.rows if r["task"] == t) for t in tasks}
    body = []
    for point in sorted(inputs.sequence, key=lambda p: (p.segmentation != "none", p.segmentation, -p.rate_hz)):
        cells = [_td(point.upstream, css="name"), _td(f"{point.rate_hz:.3g}"), _td(point.segmentation),
                 _td(point.target_rate or "–"), _td(point.method or "–"), _td(point.layers),
                 _significant(point.macs_per_second, 1e6, "counted on one 1 s utterance")]
        cells += [_td(format_metric(by_pair[point.upstream, t]) if (point.upstream, t) in by_pair else "–")
                  for t in tasks]
        body.append(cells)
    header = ["upstream", "frame rate (Hz)", "segments", "targets", "method", "layers", "MMACs per audio second"]
    note = ("<p class=\"note\">The benchmarked MelHuBERT upstreams by output frame rate. Segments: "
            "<code>fixed</code> groups of frames averaged, <code>conv</code> a strided convolution, "
            "<code>units</code> runs of k-means units of the input frames, <code>alignment</code> phone "
            "boundaries, each merged or split to the same count; targets: pre-training's cluster targets "
            "upsampled to the frames or subsampled to the segments. Frame-level tasks read every model on its "
            "20 ms grid (a segment repeated over the frames it covers); utterance tasks read the short "
            "sequence.</p>\n")
    return note + _table(header + [_column_header(first_of_task[t]) for t in tasks], body, "sequence")



def robustness_html(inputs: ReportInputs) -> str:
    """Per (upstream, task) tested under conditions: what trained its head and the test metric under each
    condition (hover a cell for the change against clean)."""
    rows = tested_rows(inputs.rows)
    conditions = condition_order(rows)
    tasks, upstreams = task_order(rows), upstream_order(rows)
    rows = sorted(rows, key=lambda r: (tasks.index(r["task"]), upstreams.index(r["upstream"])))
    body = []
    for r in rows:
        clean = clean_metrics(r).get(r["metric"])
        unit, arrow = " (%)" if is_rate(r) else "", "↑" if r["higher_is_better"] else "↓"
        cells = [_td(r["upstream"], css="name"), _td(r["task"]), _td(f"{r['metric']}{unit} {arrow}"),
                 _td(trained_on(r))]
        for spec in conditions:
            metrics = r["test_by_condition"].get(spec)
            text = format_metric({**r, "cond": metrics}, "cond")
            title = None
            if metrics and clean is not None and r["metric"] in metrics:
                delta = float(metrics[r["metric"]]) - float(clean)
                title = f"{100.0 * delta:+.2f} points against clean" if is_rate(r) else \
                    f"{delta:+.3f} against clean"
            cells.append(_td(text, title))
        body.append(cells)
    retrained = any(r.get("train_conditions") for r in rows)
    note = ("<p class=\"note\">Test metric of each trained head under every <code>--test-conditions</code> "
            "distortion (docs/robustness.md): the checkpoint chosen on the clean dev split, tested once per "
            "condition, distorted audio run live through the upstream (clean: the plain test result). "
            + ("Trained on: the conditions drawn per cut and epoch for <code>--train-conditions</code> "
               "(clean: the usual training). " if retrained else "Every head was trained on clean audio. ")
            + ("<code>domain:name=X</code> columns distort nothing: the head is tested on the subset's "
               "out-of-domain split test_X instead (<code>speechrep synth --domains</code>). "
               if any(condition_point(spec).kind == "domain" for spec in conditions) else "")
            + "Hover a cell for its change against clean.</p>\n")
    header = ["upstream", "task", "metric", "trained on"] + conditions
    return note + _table(header, body, "robustness")


def invariance_html(result: Mapping[str, Any]) -> str:
    """Per upstream and hidden state: NMI of k-means clusters with the condition and with the phone, each
    with its chance level (`speechrep analyze invariance`)."""
    body = []
    for label, entry in result["upstreams"].items():
        table = entry["nmi"]
        for layer, value in enumerate(table["condition"]):
            phone = "–" if table["phone"] is None else \
                f"{table['phone'][layer]:.3f} ({table['chance:phone'][layer]:.3f})"
            body.append([_td(label if layer == 0 else "", css="name"), _td(layer),
                         _td(f"{value:.3f} ({table['chance:condition'][layer]:.3f})"), _td(phone)])
    note = (f"<p class=\"note\">{esc(result['subset'])}/{esc(result['split'])} rendered under "
            f"{esc(', '.join(result['conditions']))}; k = {esc(result['k'])} clusters per hidden state. NMI of the "
            "clusters with the condition (low: the layer ignores the distortion) and with the phone (high: "
            "clusters are phonetic); in brackets the same clusters against shuffled labels.</p>\n")
    header = ["upstream", "hidden state", "NMI condition (chance) ↓", "NMI phone (chance) ↑"]
    return note + _table(header, body, css="invariance")


HEAR_FOLDER = "hear"  # RESULTS_DIR/hear/<upstream>/<task>/results.json: one `hear-eval --out` per upstream


def load_hear_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every hear-eval results.json under RESULTS_DIR/hear/<upstream>/<task>/, upstream by folder name."""
    rows = []
    for path in sorted(Path(results_dir).glob(f"{HEAR_FOLDER}/*/*/results.json")):
        result = json.loads(path.read_text())
        rows.append({**result, "upstream": path.parent.parent.name})
    return rows


def hear_html(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per upstream, one column per (task, metric): the test mean over rounds (± std when rounds
    differ)."""
    columns = list(dict.fromkeys((r["task"], m) for r in results for m in r["test"]))
    upstreams = list(dict.fromkeys(r["upstream"] for r in results))
    by_key = {(r["upstream"], r["task"]): r for r in results}
    body = []
    for upstream in upstreams:
        cells = [_td(upstream, css="name")]
        for task, metric in columns:
            r = by_key.get((upstream, task))
            if r is None or metric not in r["test"]:
                cells.append(_td("–"))
                continue
            std = r.get("test_std", {}).get(metric, 0.0)
            cells.append(_td(f"{r['test'][metric]:.3f}" + (f" ± {std:.3f}" if std else ""),
                             title=f"{len(r.get('rounds', []))} round(s), {r.get('seconds', 0):.0f} s"))
        body.append(cells)
    note = ("<p class=\"note\">The HEAR protocol (<code>speechrep hear-eval</code>, "
            "docs/benchmarks_sg_hear.md): embeddings of each task's clips, an MLP chosen on the validation "
            "split, test scores averaged over rounds; <code>majority</code> is the trivial baseline. Hover a "
            "cell for its rounds and time.</p>\n")
    header = ["upstream"] + [f"{task} {metric}" for task, metric in columns]
    return note + _table(header, body, css="hear")

"""The report's figures, each returned as a PNG data URI (matplotlib's object API, no pyplot state)."""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechrep.bench.leaderboard import is_rate
from speechrep.bench.report.compression import ORIGINAL, CompressionLine
from speechrep.bench.report.inputs import RANDOM_SUFFIX, RunDir, downstream_curve, task_order, upstream_order
from speechrep.bench.report.robustness import SEVERITY, clean_metrics, degradation_families, tested_rows
from speechrep.bench.report.sequence import SequencePoint


def _figure(width: float, height: float):
    # The object API with the Agg canvas: no pyplot global state, no display, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _task_panels(count: int, legend_space: float):
    """A figure of `count` panels, three per row (4 × 2.9 inches each, plus `legend_space` inches below), and
    its first `count` axes (the grid's spare ones hidden)."""
    columns = min(3, count)
    grid_rows = math.ceil(count / columns)
    fig = _figure(4.0 * columns, 2.9 * grid_rows + legend_space)
    axes = fig.subplots(grid_rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _legend_handles(axes) -> dict:
    """Label → first line of that label over all panels (unlabelled lines, "_..." labels, left out)."""
    handles: dict = {}
    for ax in axes:
        for line in ax.lines:
            if not line.get_label().startswith("_"):
                handles.setdefault(line.get_label(), line)
    return handles


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
    fig, axes = _task_panels(len(tasks), 0.6)
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
    handles = {}
    for ax in axes:
        for line in ax.lines:
            handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 6), fontsize=8)
    return _png_data_uri(fig)


def plot_tuning_tradeoff(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Small multiples, one panel per task: test metric against the upstream parameters each strategy trains
    (symmetric log axis: frozen = 0), one labelled point per upstream line; a PNG data URI."""
    tasks, upstreams = task_order(rows), upstream_order(rows)
    points = [r for r in rows if "tuned" in (r.get("params") or {})]
    if not points:
        return None
    colors = upstream_colors(upstreams)
    fig, axes = _task_panels(len(tasks), 0.4)
    for ax, task in zip(axes, tasks):
        mine = [r for r in points if r["task"] == task]
        unit = ""
        for r in mine:
            scale, unit = (100.0, " (%)") if is_rate(r) else (1.0, "")
            x, y = r["params"]["tuned"], scale * float(r["test"][r["metric"]])
            ax.scatter([x], [y], color=colors[r["upstream"]], s=18, zorder=3)
            ax.annotate(str(r.get("tuning", "frozen")), (x, y), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=1e3)
        arrow = "↑" if mine and mine[0]["higher_is_better"] else "↓"
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("tuned upstream parameters", fontsize=8)
        ax.set_ylabel(f"test {mine[0]['metric'] if mine else ''}{unit} {arrow}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png_data_uri(fig)


def plot_compression(lines: Sequence[CompressionLine], rows: Sequence[Mapping[str, Any]],
                     axis: str = "macs") -> str | None:
    """Small multiples, one panel per task: test metric against MACs per audio second (`axis="macs"`) or
    parameters (`axis="params"`), one line per compression method from its original (a black star); a PNG
    data URI (None when no benchmarked step has a known size)."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    if axis not in ("macs", "params"):
        raise ValueError(f"axis {axis!r}: 'macs' or 'params'")

    def x_of(point) -> float | None:
        value = point.macs_per_second if axis == "macs" else point.params
        return None if value is None else float(value) / 1e6

    tasks = task_order(rows)
    by_pair = {(r["upstream"], r["task"]): r for r in rows}
    if not any(x_of(p) is not None and any((p.upstream, t) in by_pair for t in tasks)
               for line in lines for p in line.points if p.method != ORIGINAL):
        return None
    palette = colormaps["tab10"].colors
    sparse = ", ".join(dict.fromkeys(p.method for line in lines for p in line.points if p.sparse))
    fig, axes = _task_panels(len(tasks), 0.6)
    for ax, task in zip(axes, tasks):
        unit, first = "", next(r for r in rows if r["task"] == task)
        for index, line in enumerate(lines):
            xs, ys = [], []
            for point in line.points:
                row = by_pair.get((point.upstream, task))
                if row is None or x_of(point) is None or row["metric"] not in (row.get("test") or {}):
                    continue
                scale, unit = (100.0, " (%)") if is_rate(row) else (1.0, "")
                xs.append(x_of(point))
                ys.append(scale * float(row["test"][row["metric"]]))
                if point.method == ORIGINAL:
                    ax.plot(xs[-1:], ys[-1:], color="black", marker="*", markersize=10, linestyle="none",
                            zorder=4)
                else:
                    ax.annotate(f"{point.keep:g}", (xs[-1], ys[-1]), fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
            if xs:
                ax.plot(xs, ys, color=palette[index % len(palette)], marker="o", markersize=3.5,
                        linewidth=1.3, label=line.label)
        ax.set_title(task, fontsize=10)
        what = "MMACs per audio second" if axis == "macs" else "parameters (M)"
        ax.set_xlabel(what + (f"\n({sparse}: nonzero weights only)" if sparse else ""), fontsize=8)
        ax.set_ylabel(f"test {first['metric']}{unit} {'↑' if first['higher_is_better'] else '↓'}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = _legend_handles(axes)
    handles[ORIGINAL] = Line2D([], [], color="black", marker="*", markersize=9, linestyle="none")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 6), fontsize=8)
    return _png_data_uri(fig)


def plot_layer_curves(probe: Mapping[str, Any]) -> str | None:
    """Small multiples, one panel per task: the test metric of the run on each hidden state, one line per
    upstream (dashed: untrained controls), its weighted sum as a dotted horizontal line and its best layer on
    dev as a star; a PNG data URI (None without probed tasks)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    upstreams = list(probe["upstreams"])
    tasks = list(dict.fromkeys(t for entry in probe["upstreams"].values() for t in entry.get("tasks", {})))
    if not tasks:
        return None
    colors = upstream_colors(upstreams)
    fig, axes = _task_panels(len(tasks), 0.6)
    for ax, task in zip(axes, tasks):
        for upstream in upstreams:
            t = probe["upstreams"][upstream].get("tasks", {}).get(task)
            if t is None:
                continue
            scale = 100.0 if t["percent"] else 1.0
            layers = [r["layer"] for r in t["layers"]]
            values = [scale * r["test"] for r in t["layers"]]
            ax.plot(layers, values, color=colors[upstream], marker="o", markersize=3, linewidth=1.3,
                    linestyle="--" if upstream.endswith(RANDOM_SUFFIX) else "-", label=upstream)
            ax.axhline(scale * t["weighted_sum"]["test"], color=colors[upstream], linestyle=":",
                       linewidth=1.2)
            if t["best_layer"] in layers:
                ax.plot([t["best_layer"]], [values[layers.index(t["best_layer"])]], color=colors[upstream],
                        marker="*", markersize=11, linestyle="none")
        first = next(e["tasks"][task] for e in probe["upstreams"].values() if task in e.get("tasks", {}))
        unit = " (%)" if first["percent"] else ""
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("hidden state", fontsize=8)
        ax.set_ylabel(f"test {first['metric']}{unit} {'↑' if first['higher_is_better'] else '↓'}", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = _legend_handles(axes)
    handles["weighted sum"] = Line2D([], [], color="grey", linestyle=":")
    handles["best on dev"] = Line2D([], [], color="grey", marker="*", markersize=9, linestyle="none")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 6), fontsize=8)
    return _png_data_uri(fig)


def plot_cka(upstream: str, targets: Mapping[str, Sequence[float] | None]) -> str:
    """Heat map hidden states × targets (log-mel, phone, word) of an upstream's linear CKA; a PNG data URI."""
    names = [name for name, values in targets.items() if values is not None]
    matrix = np.array([targets[name] for name in names], dtype=np.float64).T  # (layers, targets)
    fig = _figure(1.1 * len(names) + 2.6, max(2.4, 0.28 * matrix.shape[0] + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap="magma", vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0)
    if matrix.shape[0] <= 40:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_yticks(np.arange(matrix.shape[0]))
    ax.set_ylabel("hidden state")
    ax.set_title(f"{upstream}: linear CKA", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9)
    return _png_data_uri(fig)


def plot_sequence(points: Sequence[SequencePoint], rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Small multiples, one panel per task: test metric against output frame rate, one line per segmentation
    (and pre-training target rate, or distilled student) beside the uncompressed models (stars: black for
    MelHuBERT, grey for distilled students); a PNG data URI (None without a compressed point that has a
    result)."""
    from matplotlib import colormaps

    tasks = task_order(rows)
    by_pair = {(r["upstream"], r["task"]): r for r in rows}
    if not any((p.upstream, t) in by_pair for p in points if p.segmentation != "none" for t in tasks):
        return None
    lines: dict[str, list[SequencePoint]] = {}
    for point in points:
        if point.segmentation != "none":
            name = point.segmentation + (f", {point.target_rate}" if point.target_rate else "")
            name += f", {point.method}" if point.method not in ("", "melhubert") else ""
            name += ", CDM" if point.distortions else ""
            lines.setdefault(name, []).append(point)
    palette = colormaps["tab10"].colors
    fig, axes = _task_panels(len(tasks), 0.6)
    for ax, task in zip(axes, tasks):
        def value(point: SequencePoint) -> float | None:
            row = by_pair.get((point.upstream, task))
            if row is None or row["metric"] not in (row.get("test") or {}):
                return None
            return (100.0 if is_rate(row) else 1.0) * float(row["test"][row["metric"]])

        for point in points:  # uncompressed: black stars, distilled students grey
            if point.segmentation == "none" and value(point) is not None:
                grey = point.method not in ("", "melhubert")
                ax.plot([point.rate_hz], [value(point)], color="0.55" if grey else "black", marker="*",
                        markersize=10, linestyle="none", zorder=4)
        for index, (name, members) in enumerate(lines.items()):
            pairs = sorted((p.rate_hz, value(p)) for p in members if value(p) is not None)
            if pairs:
                xs, ys = zip(*pairs)
                ax.plot(xs, ys, color=palette[index % len(palette)], marker="o", markersize=3.5,
                        linewidth=1.3, label=name)
        first = next(r for r in rows if r["task"] == task)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("output frames per second", fontsize=8)
        ax.set_ylabel(f"test {first['metric']}" + (" (%)" if is_rate(first) else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8,
                   frameon=False)
    return _png_data_uri(fig)



def plot_robustness(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """One figure per condition family (e.g. `noise (kind=white)`): small multiples, one panel per task, the
    test metric against the family's severity (SNR, RT60, ...), one line per upstream, its clean metric as a
    dotted line of the same colour; [(family, PNG data URI)], empty when no tested condition has a
    severity."""
    from matplotlib.lines import Line2D

    rows = tested_rows(rows)
    tasks, upstreams = task_order(rows), upstream_order(rows)
    colors = upstream_colors(upstreams)
    by_pair = {(r["upstream"], r["task"]): r for r in rows}
    figures = []
    for family, points in degradation_families(rows).items():
        name, label, milder_when_larger = SEVERITY[points[0].kind]
        fig, axes = _task_panels(len(tasks), 0.6)
        for ax, task in zip(axes, tasks):
            first = next(r for r in rows if r["task"] == task)
            for up in upstreams:
                row = by_pair.get((up, task))
                if row is None:
                    continue
                scale = 100.0 if is_rate(row) else 1.0
                pairs = [(p.severity, scale * float(row["test_by_condition"][p.spec][row["metric"]]))
                         for p in points if row["metric"] in (row["test_by_condition"].get(p.spec) or {})]
                style = "--" if up.endswith(RANDOM_SUFFIX) else "-"
                if pairs:
                    xs, ys = zip(*pairs)
                    ax.plot(xs, ys, color=colors[up], marker="o", markersize=3.5, linewidth=1.3,
                            linestyle=style, label=up)
                clean = clean_metrics(row).get(row["metric"])
                if clean is not None and pairs:
                    ax.axhline(scale * float(clean), color=colors[up], linestyle=":", linewidth=1.0)
            if milder_when_larger:
                ax.invert_xaxis()
            ax.set_title(f"{task}: {family}", fontsize=9)
            ax.set_xlabel(label + (" (reversed: milder on the left)" if milder_when_larger else ""),
                          fontsize=8)
            unit = " (%)" if is_rate(first) else ""
            ax.set_ylabel(f"test {first['metric']}{unit} {'↑' if first['higher_is_better'] else '↓'}",
                          fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        handles = _legend_handles(axes)
        handles["clean (dotted)"] = Line2D([], [], color="grey", linestyle=":")
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 5), fontsize=8, frameon=False)
        figures.append((family, _png_data_uri(fig)))
    return figures


def plot_projection(label: str, projection: Mapping[str, Any], conditions: Sequence[str],
                    top_phones: int = 8) -> str:
    """Two panels of one upstream's 2-D frame projection (`speechrep analyze invariance`): coloured by
    condition and by phone (the `top_phones` most frequent; the rest grey)."""
    from matplotlib import colormaps

    xy = np.asarray(projection["xy"], dtype=np.float64)
    palette = colormaps["tab10"].colors
    panels = 2 if projection.get("phone") else 1
    fig = _figure(4.2 * panels, 3.9)
    axes = fig.subplots(1, panels, squeeze=False).ravel()
    index = np.asarray(projection["condition"])
    for c, name in enumerate(conditions):
        chosen = index == c
        axes[0].scatter(xy[chosen, 0], xy[chosen, 1], s=5, color=palette[c % len(palette)], label=name,
                        alpha=0.7, linewidths=0)
    axes[0].set_title(f"{label}: by condition", fontsize=9)
    axes[0].legend(fontsize=7, markerscale=2, loc="best")
    if panels == 2:
        phones = np.asarray(projection["phone"], dtype=object)
        names, counts = np.unique(phones, return_counts=True)
        common = [str(n) for n in names[np.argsort(-counts, kind="stable")][:top_phones]]
        rest = ~np.isin(phones, common)
        axes[1].scatter(xy[rest, 0], xy[rest, 1], s=4, color="0.8", label="other", linewidths=0)
        for i, name in enumerate(common):
            chosen = phones == name
            axes[1].scatter(xy[chosen, 0], xy[chosen, 1], s=5, color=palette[i % len(palette)], label=name,
                            alpha=0.8, linewidths=0)
        axes[1].set_title(f"{label}: by phone", fontsize=9)
        axes[1].legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _png_data_uri(fig)

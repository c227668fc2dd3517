"""The whole report page: sections in order, inline CSS, written atomically as one self-contained HTML file."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from speechrep.bench.report.inputs import (
    ReportInputs,
    layer_weight_matrix,
    load_inputs,
    task_order,
    upstream_order,
)
from speechrep.bench.report.plots import (
    plot_cka,
    plot_compression,
    plot_downstream_curves,
    plot_layer_curves,
    plot_layer_weights,
    plot_pretrain_curves,
    plot_projection,
    plot_robustness,
    plot_scores,
    plot_sequence,
    plot_tuning_tradeoff,
)
from speechrep.bench.report.robustness import load_invariance
from speechrep.bench.report.synthesis import copy_samples, synthesis_section
from speechrep.bench.report.tables import (
    compression_html,
    controls_html,
    count_text,
    esc,
    hear_html,
    img_tag,
    invariance_html,
    kmeans_html,
    layer_analysis_html,
    leaderboard_html,
    load_hear_results,
    provenance_html,
    robustness_html,
    sequence_html,
    settings_html,
    tuning_html,
)
from speechrep.storage import atomic_write_text

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"


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
        body = img_tag(plot_scores(inputs.scores, upstreams), "score per upstream")
    else:
        body = "<p>No score: the benchmark has no baseline row (fbank) and no given references.</p>"
    sections.append(("score", "Score per upstream", body))

    heat_maps, single_layer = [], []
    for up in upstreams:
        tasks, matrix = layer_weight_matrix(rows, up)
        if matrix.shape[1] > 1:
            heat_maps.append(img_tag(plot_layer_weights(up, tasks, matrix), f"layer weights of {up}"))
        else:
            single_layer.append(up)
    body = ("<p class=\"note\">The softmax weights of the learned weighted sum of hidden states (mean over "
            "sub-runs): which layers each task drew on. Uniform weights (1/L) mean the head did not prefer any "
            "layer.</p>\n" + f"<div class=\"plots\">{''.join(heat_maps)}</div>")
    if single_layer:
        body += f"\n<p class=\"note\">One layer only, nothing to weigh: {esc(', '.join(single_layer))}.</p>"
    sections.append(("layers", "Layer weights", body))
    if inputs.probe:
        sections.append(("layer-analysis", "Layer analysis", layer_analysis_body(inputs.probe)))

    if inputs.pretrain:
        plots, missing = [], []
        for name, run in inputs.pretrain.items():
            uri = plot_pretrain_curves(name, run)
            if uri is None:
                missing.append(name)
            else:
                plots.append(img_tag(uri, f"pre-training curves of {name}"))
        body = f"<div class=\"plots\">{''.join(plots)}</div>"
        if missing:
            body += f"\n<p class=\"note\">No logged loss yet: {esc(', '.join(missing))}.</p>"
        if inputs.kmeans:
            body += "\n" + kmeans_html(inputs.kmeans)
        sections.append(("pretraining", "Pre-training curves", body))

    uri = plot_downstream_curves(inputs.bench_dir, rows)
    body = ("<p class=\"note\">Dev metric vs step for every upstream on each task (mean over sub-runs; dashed: "
            "untrained controls). The test split is evaluated once, at the end, with the best-dev checkpoint.</p>"
            + (img_tag(uri, "downstream learning curves") if uri else "<p>No metrics.jsonl found.</p>"))
    sections.append(("downstream", "Downstream learning curves", body))
    if any(r.get("tuning", "frozen") != "frozen" for r in rows):
        uri = plot_tuning_tradeoff(rows)
        sections.append(("tuning", "Efficient tuning",
                         tuning_html(inputs) + (img_tag(uri, "metric against tuned parameters") if uri else "")))
    if inputs.compression:
        sections.append(("compression", "Compression", compression_body(inputs)))
    if inputs.sequence:
        plot = plot_sequence(inputs.sequence, inputs.rows)
        sections.append(("sequence", "Sequence compression", sequence_html(inputs) + (
            "\n<p class=\"note\">Test metric against output frame rate, one line per segmentation; stars: "
            f"the uncompressed models (grey: distilled students).</p>\n<div class=\"plots\">{img_tag(plot, 'metric against frame rate')}"
            "</div>" if plot else "")))
    if any(r.get("test_by_condition") for r in rows):
        sections.append(("robustness", "Robustness", robustness_body(inputs)))
    hear = load_hear_results(inputs.root)  # RESULTS_DIR/hear/<upstream>/<task>/results.json, when run
    if hear:
        sections.append(("hear", "HEAR tasks", hear_html(hear)))
    invariance = load_invariance(inputs.root)  # RESULTS_DIR/invariance.json, when analysed
    if invariance is not None:
        sections.append(("invariance", "Noise invariance", invariance_body(invariance)))
    synthesis = synthesis_section(inputs.root)  # RESULTS_DIR/synthesis/synthesis.json, when measured
    if synthesis is not None:
        sections.append(("synthesis", "Synthesis and voice conversion", synthesis))
    sections.append(("settings", "Benchmark settings and tuning", settings_html(inputs)))
    sections.append(("provenance", "Provenance", provenance_html(inputs)))

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title, _ in sections)
    content = "\n".join(f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'
                        for anchor, title, body in sections)
    summary = (f"{count_text(len(upstreams), 'upstream')} × {count_text(len(task_order(rows)), 'task')}"
               + (f", {count_text(len(inputs.pretrain), 'pre-training run')}" if inputs.pretrain else ""))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>speechrep report: {esc(inputs.root.resolve().name)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<header>\n<h1>speechrep report</h1>\n<p class=\"note\">{esc(summary)} · "
            f"{esc(inputs.root.resolve())} · generated {esc(generated)}</p>\n<nav>{nav}</nav>\n</header>\n"
            f"{content}\n</body>\n</html>\n")


def layer_analysis_body(probe: Mapping[str, Any]) -> str:
    """The Layer analysis section of a probe: per-layer curves, the summary table and the CKA heat maps."""
    uri = plot_layer_curves(probe)
    body = ("<p class=\"note\">Each hidden state probed on its own (<code>speechrep probe</code>): the "
            "test metric of a run on hidden state k, one line per upstream (dashed: untrained controls), its "
            "weighted sum as a dotted line and its best layer on dev as a star.</p>\n"
            + (img_tag(uri, "per-layer probing curves") if uri else "<p>No probed task yet.</p>")
            + "\n" + layer_analysis_html(probe))
    maps, notes = [], []
    for upstream, entry in probe["upstreams"].items():
        similarity = entry.get("similarity")
        if not similarity:
            continue
        maps.append(img_tag(plot_cka(upstream, similarity["targets"]), f"CKA of the layers of {upstream}"))
        notes += [f"{upstream}: no {name} target ({why})"
                  for name, why in similarity.get("missing", {}).items()]
    if maps:
        first = next(e["similarity"] for e in probe["upstreams"].values() if e.get("similarity"))
        where = f"{first['subset']}/{first['split']}"
        body += (f"\n<h3>Layer similarity (linear CKA)</h3>\n<p class=\"note\">{esc(first['estimator'])}, on "
                 f"at most {esc(first['max_frames'])} frames of {esc(where)}: "
                 "each hidden state against log-mel frames, one-hot phone, word and speaker identity and "
                 "log-F0 (voiced frames only) of the same frames (1: the same up to a rotation and a scale; "
                 "0: linearly unrelated). SVCCA and PWCCA are in probe.json.</p>\n"
                 f"<div class=\"plots\">{''.join(maps)}</div>")
        body += "".join(f"\n<p class=\"note\">{esc(note)}.</p>" for note in notes)
    return body


def compression_body(inputs: ReportInputs) -> str:
    """The Compression section: the table of benchmarked compress steps and the frontier plots."""
    figures = {"macs": "metric against MACs per audio second", "params": "metric against parameters"}
    plots = [img_tag(uri, alt) for uri, alt in ((plot_compression(inputs.compression, inputs.rows, axis), alt)
                                                for axis, alt in figures.items()) if uri is not None]
    sparse = any(p.sparse for line in inputs.compression for p in line.points)
    caption = ("<p class=\"note\">Test metric against the cost of each step, one line per method from the "
               "original (star); each point is labelled with its keep fraction."
               + (" Unstructured pruning is placed at its nonzero weights and their MACs (sparse counts): a "
                  "dense kernel still runs every weight, so these points are not faster in practice."
                  if sparse else "") + "</p>\n")
    return compression_html(inputs) + ("\n" + caption + f"<div class=\"plots\">{''.join(plots)}</div>"
                                       if plots else "")


def robustness_body(inputs: ReportInputs) -> str:
    """The Robustness section: the table of test metrics per condition and the degradation plots."""
    figures = plot_robustness(inputs.rows)
    if not figures:
        return robustness_html(inputs)
    caption = ("<p class=\"note\">Degradation: the test metric against each distortion's severity, one "
               "figure per kind of condition, one panel per task, one line per upstream (dashed: untrained "
               "controls); the dotted line of the same colour is its clean test metric. Conditions without a "
               "severity (telephone) are in the table only.</p>\n")
    plots = "".join(img_tag(uri, f"test metric against severity: {family}") for family, uri in figures)
    return robustness_html(inputs) + "\n" + caption + f"<div class=\"plots\">{plots}</div>"


def invariance_body(result: Mapping[str, Any]) -> str:
    """The Noise invariance section: the per-layer NMI table and each upstream's 2-D projection."""
    figures = []
    for label, entry in result["upstreams"].items():
        projection = entry.get("projection")
        if projection:
            uri = plot_projection(label, projection, result["conditions"])
            figures.append(img_tag(uri, f"{label}: 2-D projection of hidden state {projection['layer']}"))
    if not figures:
        return invariance_html(result)
    caption = ('<p class="note">Frames of one hidden state per upstream (the analysis\'s '
               "<code>--projection-layer</code>, named in each picture's alt text) drawn by t-SNE, a seeded "
               "sample across conditions: colours apart on the left mean the layer separates the "
               "distortions, on the right that it separates phones.</p>\n")
    return invariance_html(result) + "\n" + caption + f'<div class="plots">{"".join(figures)}</div>'


def write_report(results_dir: Path, out: Path | None = None, more: Sequence[Path] = ()) -> Path:
    """Write the static HTML report of a benchmark OUT dir, a demo dir or a probe OUT dir (joined by the rows
    of `more` benchmark folders); returns its path (default RESULTS_DIR/report.html)."""
    inputs = load_inputs(Path(results_dir), [Path(d) for d in more])
    path = Path(out) if out is not None else Path(results_dir) / REPORT_NAME
    atomic_write_text(path, render_report(inputs))
    copy_samples(inputs.root, path.parent)  # the synthesis section's audio travels with the page
    log.info("report: %s", path)
    return path

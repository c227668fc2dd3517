"""The static HTML report of a benchmark or demo run: one page that opens from disk, plots embedded as PNG.

    path = write_report(Path("demo_out"))          # → demo_out/report.html
    speechrep report demo_out [--out FILE]

RESULTS_DIR is a benchmark OUT dir (`results.json`, `<upstream>/<task>/...`, see downstream.runner) or a demo
dir holding one in `bench/`, pre-training run dirs in `pretrain/<name>/` and `demo.json` (commands and wall
times per stage, see bench.demo). The page shows the leaderboard (test metrics, dev metrics, the SUPERB-style
score), the score per upstream as a bar chart, each upstream's learned layer weights per task as a heat map,
the pre-training curves (train and dev loss vs step), the downstream curves (dev metric vs step, one panel per
task) and the provenance (commands, configs, package versions, git revisions, wall times). A `probe.json` in
RESULTS_DIR (`speechrep probe`, see analysis.probe) adds the Layer analysis section (metric per hidden state,
CKA heat maps); a probe OUT dir alone is reportable, its weighted-sum runs being the leaderboard's rows. It
reads only files written by finished or running jobs; it never trains or evaluates anything.

The package, by concern: `inputs` reads the run files (results.json, run directories, demo.json), `plots` draws
the PNG figures, `tables` builds the HTML tables and sections, `page` assembles and writes the page;
`compression` finds the benchmarked `speechrep compress` steps (the Compression section: size, MACs and
metrics of each step beside its original, the frontier per task).
"""
from __future__ import annotations

from speechrep.bench.report.inputs import (
    RANDOM_SUFFIX,
    ReportInputs,
    RunDir,
    downstream_curve,
    find_bench_dir,
    layer_weight_matrix,
    load_inputs,
    pair_run_dirs,
    read_run_dir,
    task_order,
    upstream_order,
)
from speechrep.bench.report.page import REPORT_NAME, render_report, write_report
from speechrep.bench.report.plots import (
    accuracy_key,
    plot_downstream_curves,
    plot_layer_weights,
    plot_pretrain_curves,
    plot_scores,
    upstream_colors,
)
from speechrep.bench.report.tables import controls_html, esc, kmeans_html, leaderboard_html, provenance_html

__all__ = [
    "RANDOM_SUFFIX", "REPORT_NAME", "ReportInputs", "RunDir", "accuracy_key", "controls_html", "downstream_curve",
    "esc", "find_bench_dir", "kmeans_html", "layer_weight_matrix", "leaderboard_html", "load_inputs",
    "pair_run_dirs", "plot_downstream_curves", "plot_layer_weights", "plot_pretrain_curves", "plot_scores",
    "provenance_html", "read_run_dir", "render_report", "task_order", "upstream_colors", "upstream_order",
    "write_report",
]

"""The benchmark summary: a leaderboard of upstreams × tasks (test metrics) with the SUPERB-style score.

    text = write_summary(rows, out_dir)   # OUT/leaderboard.md + OUT/results.json; returns the table text
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechrep.bench.score import DEFAULT_BASELINE, Reference, references_from_rows, superb_scores
from speechrep.storage import atomic_write_text


def is_rate(row: Mapping[str, Any]) -> bool:
    """Whether the headline metric is a rate or accuracy (shown in %), not a dB, cents or MSE value."""
    if "percent" in row:
        return bool(row["percent"])
    return float(row.get("best_value", 1.0)) in (0.0, 1.0)  # rows written before the task said so


def format_metric(row: Mapping[str, Any], split: str = "test") -> str:
    """The pair's headline metric on `split` as the page prints it: % for rates, 3 decimals otherwise."""
    values = row.get(split) or {}
    if row["metric"] not in values:
        return "–"
    value = float(values[row["metric"]])
    if not math.isfinite(value):
        return str(value)
    return f"{100.0 * value:.2f}" if is_rate(row) else f"{value:.3f}"


def _cell(row: Mapping[str, Any] | None) -> str:
    """A test metric cell: % for rates and accuracies, the plain value for dB and MOS metrics."""
    return "–" if row is None else format_metric(row)


def _span(values: Sequence[float], unit: str = "") -> str:
    """One value, or the range of values that differ between an upstream's tasks."""
    low, high = min(values), max(values)
    return f"{low:g}{unit}" if low == high else f"{low:g}–{high:g}{unit}"


def tuning_cells(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """An upstream's tuning columns: the strategy, the upstream parameters it trains (and their share of the
    upstream) and the size of a task's checkpoint (the trained state only), over its task rows."""
    params = [r.get("params") or {} for r in rows]
    tuned = [p["tuned"] for p in params if "tuned" in p]
    share = [100.0 * p["tuned"] / p["upstream"] for p in params if "tuned" in p and p.get("upstream")]
    sizes = [p["checkpoint_bytes"] / 2**20 for p in params if "checkpoint_bytes" in p]
    return [
        ", ".join(dict.fromkeys(str(r.get("tuning", "frozen")) for r in rows)),
        _span([round(t / 1e6, 3) for t in tuned], "M") if tuned else "–",
        _span([float(f"{v:.2g}") for v in share], " %") if share else "–",
        _span([round(v, 2) for v in sizes], " MB") if sizes else "–",
    ]


def leaderboard_markdown(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, float]) -> str:
    """A Markdown table: one line per upstream, one column per task (test metric, %), then the score.

    When a row tuned its upstream (any `--tuning` but frozen), the strategy, its trained upstream parameters,
    their share of the upstream and the checkpoint size come before the score."""
    tasks = sorted({r["task"] for r in rows})
    upstreams = list(dict.fromkeys(r["upstream"] for r in rows))
    by_pair = {(r["upstream"], r["task"]): r for r in rows}
    metric_of = {r["task"]: (r["metric"], r["higher_is_better"]) for r in rows}
    tuned = any(r.get("tuning", "frozen") != "frozen" for r in rows)
    header = ["upstream"] + [f"{t} {metric_of[t][0]} {'↑' if metric_of[t][1] else '↓'}" for t in tasks]
    if tuned:
        header += ["tuning", "tuned params", "share", "checkpoint"]
    header.append("score ↑")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for up in upstreams:
        score = f"{scores[up]:.1f}" if up in scores else "–"
        cells = [up] + [_cell(by_pair.get((up, t))) for t in tasks]
        if tuned:
            cells += tuning_cells([r for r in rows if r["upstream"] == up])
        lines.append("| " + " | ".join(cells + [score]) + " |")
    return "\n".join(lines) + "\n"


def conditions_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of test metrics per distortion condition: one line per (upstream, task), one column
    per condition (`--test-conditions`); empty when no row was tested under conditions."""
    tested = [r for r in rows if r.get("test_by_condition")]
    if not tested:
        return ""
    conditions = list(dict.fromkeys(c for r in tested for c in r["test_by_condition"]))
    header = ["upstream", "task", "metric"] + conditions
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in tested:
        metric = f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}"
        cells = [format_metric({**r, "cond": r["test_by_condition"].get(c)}, "cond") for c in conditions]
        lines.append("| " + " | ".join([str(r["upstream"]), str(r["task"]), metric] + cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(rows: Sequence[Mapping[str, Any]], out_dir: Path, baseline_upstream: str = DEFAULT_BASELINE,
                  references: Mapping[str, Reference] | None = None) -> str:
    """Score the rows; write OUT/leaderboard.md and OUT/results.json (rows + scores); return the table."""
    refs = references_from_rows(rows, baseline_upstream, references)
    scores = superb_scores(rows, refs)
    table = leaderboard_markdown(rows, scores)
    notes = ("Test metrics in % (rates, accuracies) or in their own unit (PESQ, SI-SDR in dB, F0 error in cents, "
             "prosody MSE). "
             "Score: each task scaled linearly between the baseline "
             f"(`{baseline_upstream}` unless references are given) = 0 and the topline = 1000, "
             "averaged over tasks.")
    out_dir = Path(out_dir)
    by_condition = conditions_markdown(rows)
    if by_condition:  # only with --test-conditions: the page without them is unchanged
        distorted = any(r.get("train_conditions") for r in rows)
        trained = ("heads selected on clean dev data, trained as each run's train_conditions say" if distorted
                   else "heads trained and selected on clean data")
        # A `domain:name=X` condition is the head tested on the subset's split test_X (no distortion): named
        # so only when one was tested, the page of distortions alone is as before.
        domains = any(spec.partition(":")[0].strip() == "domain"
                      for r in rows for spec in r.get("test_by_condition") or {})
        tested = ("distortion condition and out-of-domain test split (`domain:name=X`: the subset's split "
                  "test_X)" if domains else "distortion condition")
        table += f"\nTest metrics under each {tested} ({trained}):\n\n{by_condition}"
    atomic_write_text(out_dir / "leaderboard.md", f"# Leaderboard\n\n{table}\n{notes}\n")
    summary = {"rows": list(rows), "scores": scores,
               "references": {t: {"baseline": r.baseline, "topline": r.topline} for t, r in refs.items()}}
    atomic_write_text(out_dir / "results.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return table

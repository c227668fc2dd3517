"""The SUPERB-style score: each task's test metric scaled linearly from a baseline (0) to a topline (1000).

    score_t(x) = 1000 · (x − baseline_t) / (topline_t − baseline_t)

The same formula serves both directions: for a lower-is-better metric (PER, WER) the topline is below the
baseline, so the denominator is negative and an error rate under the baseline's still scores above 0. A result
worse than the baseline scores below 0 and one past the topline above 1000 (nothing is clipped). The
upstream's score is the mean over the tasks it was scored on.

Baseline: by default the `fbank` upstream's result on the same task in the same benchmark (SUPERB's FBANK).
Topline: by default the best possible value of the metric (accuracy 1.0, PER 0.0: what mini-SUPERB uses). For
real corpora pass `references` with published baseline/topline values per task (`load_references` reads them
from YAML; `speechrep benchmark --score-references FILE`), in the metric's own units (accuracy 0-1, PER 0-1).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechrep.errors import ConfigError

log = logging.getLogger(__name__)

SCALE = 1000.0
DEFAULT_BASELINE = "fbank"


@dataclass(frozen=True)
class Reference:
    """The values of a task's metric that map to 0 (baseline) and 1000 (topline)."""

    baseline: float
    topline: float


def load_references(path: Path) -> dict[str, Reference]:
    """Score references from YAML, `task: {baseline: value, topline: value}`, in each metric's own units."""
    import yaml

    from speechrep.config import parse_yaml

    path = Path(path)
    try:
        data = parse_yaml(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read score references ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping task -> {{baseline, topline}}")
    refs = {}
    for task, values in data.items():
        if not isinstance(values, dict) or set(values) != {"baseline", "topline"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise ConfigError(f"{path}: task {task!r} needs numeric `baseline` and `topline`, got {values!r}")
        refs[str(task)] = Reference(float(values["baseline"]), float(values["topline"]))
    return refs


def task_score(value: float, reference: Reference) -> float:
    """One task's score: 0 at the baseline, 1000 at the topline, linear in between (and beyond)."""
    if reference.topline == reference.baseline:
        raise ConfigError(f"score reference {reference}: baseline equals topline, the scale is undefined")
    return SCALE * (value - reference.baseline) / (reference.topline - reference.baseline)


def references_from_rows(rows: Sequence[Mapping[str, Any]], baseline_upstream: str = DEFAULT_BASELINE,
                         given: Mapping[str, Reference] | None = None) -> dict[str, Reference]:
    """Per-task references: `given` first, else baseline = `baseline_upstream`'s row, topline = best value."""
    refs = dict(given or {})
    for row in rows:
        task = row["task"]
        if task in refs or row["upstream"] != baseline_upstream:
            continue
        refs[task] = Reference(baseline=float(row["test"][row["metric"]]), topline=float(row["best_value"]))
    return refs


def superb_scores(rows: Sequence[Mapping[str, Any]], references: Mapping[str, Reference]) -> dict[str, float]:
    """Upstream → mean task score over the tasks that have a usable reference."""
    per_upstream: dict[str, list[float]] = {}
    unscored: set[str] = set()
    for row in rows:
        ref = references.get(row["task"])
        if ref is None or ref.topline == ref.baseline:
            unscored.add(row["task"])
            continue
        score = task_score(float(row["test"][row["metric"]]), ref)
        per_upstream.setdefault(row["upstream"], []).append(score)
    if unscored:
        log.warning("no score reference (baseline row or given value) for %s: left out of the score",
                    ", ".join(sorted(unscored)))
    return {up: sum(scores) / len(scores) for up, scores in per_upstream.items()}

"""The robustness points of a benchmark: each row's test metric under the `--test-conditions` distortions.

A row (one upstream × task) tested under conditions carries `test_by_condition: {spec: metrics}` and, when its
head was trained on distorted audio, `train_conditions` (see downstream.runner). Each condition spec is parsed
back (`speechrep.audio.conditions`) into a kind, a severity (the parameter the degradation plot puts on its x
axis, e.g. the SNR of `noise`) and a family: the kind with its other parameters, one line of the plot
(`noise:snr=0,kind=white` and `noise:snr=10,kind=white` are two points of `noise (kind=white)`). Conditions
without a severity (`telephone`, the out-of-domain test splits `domain:name=X`) or that no longer parse are
in the table only.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechrep.audio.conditions import parse_condition
from speechrep.errors import ConfigError

# kind → (the parameter on the degradation plot's x axis, its axis label, whether larger values are milder:
# the axis is then reversed so that every line runs from mild on the left to severe on the right)
SEVERITY: dict[str, tuple[str, str, bool]] = {
    "noise": ("snr", "SNR (dB)", True),
    "babble": ("snr", "SNR (dB)", True),
    "reverb": ("rt60", "RT60 (s)", False),
    "clip": ("level", "clipping level (× peak)", True),
    "codec": ("quality", "compression level", False),
    "speed": ("factor", "speed factor", False),
    "pitch": ("semitones", "pitch shift (semitones)", False),
    "dropout": ("rate", "share of chunks dropped", False),
}


@dataclass(frozen=True)
class ConditionPoint:
    """One tested condition as the degradation plot places it."""

    spec: str  # as written: the key of test_by_condition
    kind: str  # e.g. noise; "" when the spec no longer parses
    family: str  # the kind and its fixed parameters, e.g. "noise (kind=white)": one line of the plot
    severity: float | None  # the SEVERITY parameter's value; None: clean, telephone or unparsed


def condition_point(spec: str) -> ConditionPoint:
    """Where the condition `spec` lies: its kind, family and severity."""
    try:
        condition = parse_condition(spec)
    except ConfigError:  # a kind of another speechrep version: shown in the table, not plotted
        return ConditionPoint(spec, "", spec, None)
    axis = SEVERITY.get(condition.kind)
    if axis is None:
        return ConditionPoint(spec, condition.kind, condition.kind, None)
    fixed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in condition.params
             if k != axis[0] and v is not None]
    family = condition.kind + (f" ({', '.join(fixed)})" if fixed else "")
    return ConditionPoint(spec, condition.kind, family, float(condition.param(axis[0])))


def tested_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows tested under conditions (the Robustness section is shown when there is one)."""
    return [r for r in rows if r.get("test_by_condition")]


def _order_key(point: ConditionPoint) -> tuple:
    if point.kind == "clean":
        return (0,)
    if point.severity is None:  # telephone, then out-of-domain splits, then kinds this version does not know
        return (2 if point.kind not in ("", "domain") else 3 if point.kind else 4, point.spec)
    milder_when_larger = SEVERITY[point.kind][2]
    return (1, point.family, -point.severity if milder_when_larger else point.severity, point.spec)


def condition_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every tested condition spec (results.json keeps them sorted by name): clean first, then each family
    from mild to severe, then the distortions without a severity, then the out-of-domain splits."""
    specs = dict.fromkeys(c for r in tested_rows(rows) for c in r["test_by_condition"])
    return sorted(specs, key=lambda spec: _order_key(condition_point(spec)))


def clean_metrics(row: Mapping[str, Any]) -> Mapping[str, float]:
    """The row's clean test metrics: its `clean` condition, else its plain test result (the same number)."""
    by_condition = row.get("test_by_condition") or {}
    for spec, metrics in by_condition.items():
        if condition_point(spec).kind == "clean":
            return metrics
    return row.get("test") or {}


def trained_on(row: Mapping[str, Any]) -> str:
    """Which audio trained the row's head: `clean`, or its train conditions."""
    return ", ".join(row.get("train_conditions") or ()) or "clean"


def degradation_families(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[ConditionPoint]]:
    """Family → its tested points with a severity, sorted by severity (the lines of the degradation plot)."""
    families: dict[str, list[ConditionPoint]] = {}
    for spec in condition_order(rows):
        point = condition_point(spec)
        if point.severity is not None:
            families.setdefault(point.family, []).append(point)
    return {name: sorted(points, key=lambda p: p.severity) for name, points in families.items()}


INVARIANCE = "invariance.json"  # `speechrep analyze invariance --out RESULTS_DIR/invariance.json`


def load_invariance(results_dir: Path) -> dict[str, Any] | None:
    """RESULTS_DIR/invariance.json, or None when there is none."""
    path = Path(results_dir) / INVARIANCE
    return json.loads(path.read_text()) if path.is_file() else None

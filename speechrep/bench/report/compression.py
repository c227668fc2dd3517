"""The compression frontier of a benchmark: which benchmarked upstreams are `speechrep compress` steps, and
their size and cost beside the upstream they were compressed from.

A benchmark's config.yaml names each upstream `LABEL=PATH` (or a bare path or registry name, see
`downstream.runner.parse_upstream`). A PATH whose config.json has a provenance with `compress` (the method)
and `keep` is a step; the folder above it holds compress.json (`compress.series.compress_series`) with
the step's parameters and MACs per audio second, and the original's. The original (provenance `upstream`) is
the shared first point of every method's line when the same benchmark ran it too (matched by resolved path,
or by name for a registry upstream). Paths in config.yaml are relative to the folder the benchmark ran in:
they are looked up from the current folder, from that folder (inferred from the saved `out`) and from the
benchmark folder's parent; what cannot be found is left out without a word. A step without a readable
compress.json is in the table without sizes and is on no line. Optional step keys: `nonzero_params` (weights
left after unstructured pruning) and `sparse_macs_per_second` (MACs if zero weights cost nothing) replace
`params` and `macs_per_second` when present.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.config import parse_yaml
from speechrep.downstream.runner import parse_upstream

log = logging.getLogger(__name__)

ORIGINAL = "original"  # the method name of the uncompressed starting point


@dataclass(frozen=True)
class CompressPoint:
    """One benchmarked upstream on the frontier: a compress step, or the original its steps start from."""

    upstream: str  # the report's row label
    method: str  # heads, ffn, prune, skip, distill, ... or ORIGINAL
    keep: float  # 1.0 for the original
    params: int | None = None  # nonzero parameters when the step counts them (unstructured pruning), else all
    macs_per_second: float | None = None  # MACs if zero weights cost nothing when counted so, else dense MACs
    dense_params: int | None = None
    dense_macs_per_second: float | None = None
    original_params: int | None = None  # of the original in the same compress.json
    train: Mapping[str, Any] | None = None  # what the step trained after compression, if anything

    @property
    def sparse(self) -> bool:
        """Whether params or MACs are the sparse (nonzero) counts rather than the dense ones."""
        return self.params != self.dense_params or self.macs_per_second != self.dense_macs_per_second


@dataclass
class CompressionLine:
    """One method's steps from one original: the original first (when benchmarked), then decreasing keep."""

    method: str
    label: str  # the legend entry
    points: list[CompressPoint] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.debug("%s: unreadable (%s), left off the compression frontier", path, e)
        return None


def _run_folder(bench_dir: Path, config: Mapping[str, Any]) -> Path | None:
    """The folder the benchmark ran in: the benchmark folder less its saved relative `out`, if they match."""
    out = config.get("out")
    if not isinstance(out, str) or not out or Path(out).is_absolute():
        return None
    parts, here = Path(out).parts, bench_dir.resolve().parts
    if len(here) > len(parts) and here[-len(parts):] == parts:
        return Path(*here[: -len(parts)])
    return None


def _resolve(source: str, bases: Sequence[Path]) -> Path | None:
    """The existing folder `source` names, absolute or relative to one of `bases` (in order), else None."""
    path = Path(source)
    for candidate in [path] if path.is_absolute() else [base / path for base in bases]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def benchmarked_upstreams(bench_dir: Path) -> tuple[dict[str, tuple[str, Path | None]], list[Path]]:
    """({run label: (source, resolved folder or None)} of the pre-trained upstreams in the benchmark's
    config.yaml (no `@random` control), the folders its relative paths are looked up from)."""
    try:
        config = parse_yaml((bench_dir / "config.yaml").read_text()) or {}
    except Exception as e:  # noqa: BLE001 - no config or unreadable YAML: nothing to map
        log.debug("%s: no readable config.yaml (%s), no compression frontier", bench_dir, e)
        return {}, []
    specs = config.get("upstreams") if isinstance(config, dict) else None
    bases = [Path.cwd(), *filter(None, [_run_folder(bench_dir, config)]), bench_dir.resolve().parent]
    bases = list(dict.fromkeys(bases))
    found: dict[str, tuple[str, Path | None]] = {}
    for spec in specs if isinstance(specs, list) else []:
        try:
            choice = parse_upstream(str(spec))
        except Exception:  # noqa: BLE001 - a spec the runner would refuse was not benchmarked
            continue
        if not choice.random_init:
            found[choice.label] = (choice.source, _resolve(choice.source, bases))
    return found, bases


def _sizes(entry: Mapping[str, Any]) -> dict[str, Any]:
    params, macs = entry.get("params"), entry.get("macs_per_second")
    return {"params": entry.get("nonzero_params", params), "dense_params": params,
            "macs_per_second": entry.get("sparse_macs_per_second", macs), "dense_macs_per_second": macs}


def _step(label: str, folder: Path) -> tuple[CompressPoint, str, Mapping[str, Any] | None] | None:
    """(the point, its original's spec, its compress.json's original entry) of a compress step folder."""
    meta = _read_json(folder / "config.json")
    provenance = meta.get("provenance") if isinstance(meta, dict) else None
    if not isinstance(provenance, dict) or not provenance.get("compress"):
        return None
    report = _read_json(folder.parent / "compress.json")
    report = report if isinstance(report, dict) else {}
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    step = next((s for s in steps if s.get("folder") == folder.name), None) or \
        next((s for s in steps if s.get("keep") == provenance.get("keep")), None)
    original = report.get("original") if isinstance(report.get("original"), dict) else None
    try:
        keep = float(provenance.get("keep", step.get("keep") if step else 1.0))
    except (TypeError, ValueError):
        return None
    point = CompressPoint(label, str(provenance["compress"]), keep, **(_sizes(step) if step else {}),
                          original_params=(original or {}).get("params"),
                          train=step.get("train") if step else None)
    return point, str(provenance.get("upstream", report.get("upstream", ""))), original


def read_compression(rows: Sequence[Mapping[str, Any]], bench_dir: Path) -> list[CompressionLine]:
    """The lines of the compression frontier, one per (benchmark folder, original, compress series folder);
    [] when no benchmarked upstream is a compress step. Two series of one method (e.g. heads ranked by weights
    and by gradients) are told apart by their folder names in the legend."""
    lines: dict[tuple[Path, str, Path], CompressionLine] = {}
    for folder in dict.fromkeys(Path(r.get("run_root", bench_dir)) for r in rows):
        labels = {r.get("run_label", r["upstream"]): r["upstream"] for r in rows
                  if Path(r.get("run_root", bench_dir)) == folder}
        sources, bases = benchmarked_upstreams(folder)
        sources = {run_label: found for run_label, found in sources.items() if run_label in labels}
        for run_label, (_, path) in sources.items():
            found = _step(labels[run_label], path) if path is not None else None
            if found is None:
                continue
            point, original_spec, original = found
            at = _resolve(original_spec, [*bases, path.parent.parent]) if original_spec else None
            match = next((name for name, (source, resolved) in sources.items() if at is not None
                          and resolved == at), None) or \
                next((name for name, (source, resolved) in sources.items() if resolved is None
                      and at is None and source == original_spec), None)
            start = labels[match] if match is not None and match != run_label else ""
            line = lines.setdefault((folder, start, path.parent),
                                    CompressionLine(point.method, point.method))
            if start and (not line.points or line.points[0].params is None and original is not None):
                # the original's sizes come from the first of its steps' compress.json that has them
                first = CompressPoint(start, ORIGINAL, 1.0, **_sizes(original or {}),
                                      original_params=(original or {}).get("params"))
                line.points[:1 if line.points and line.points[0].method == ORIGINAL else 0] = [first]
            line.points.append(point)
    groups = {(folder, start) for folder, start, _ in lines}
    for (folder, start, series), line in lines.items():
        line.points[int(line.points[0].method == ORIGINAL):] = sorted(
            (p for p in line.points if p.method != ORIGINAL), key=lambda p: -p.keep)
        notes = []
        same_method = [other for (f, first, _), other in lines.items()
                       if (f, first) == (folder, start) and other.method == line.method]
        if len(same_method) > 1:
            notes.append(series.name)
        if len(groups) > 1:
            notes.append(start or folder.name)
        if notes:
            line.label = f"{line.method} ({', '.join(notes)})"
    return list(lines.values())


def compression_points(lines: Sequence[CompressionLine]) -> list[CompressPoint]:
    """Every point once, in line order (a shared original first, where it first appears)."""
    points: dict[str, CompressPoint] = {}
    for line in lines:
        for point in line.points:
            points.setdefault(point.upstream, point)
    return list(points.values())

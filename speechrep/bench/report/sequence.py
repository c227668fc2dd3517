"""The sequence-compression points of a benchmark: benchmarked MelHuBERT upstreams, their output frame rate,
how they pool frames and what they cost.

An upstream folder (found as `compression.benchmarked_upstreams` finds them) whose config.json is of the
`melhubert` family is a point: its rate is 16 kHz / stride / `downsample`, its segmentation `fixed`
(averaged or `conv`), `units` or `alignment`. Pre-training's target rate (`upsample` or `subsample`) and
method come from the export's provenance.
MACs per audio second are counted here on one 1 s utterance (`compress.profile.count_macs`). The section is
shown when at least one benchmarked upstream is compressed; the uncompressed MelHuBERTs of the same benchmark
are the 50 Hz points.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechrep.bench.report.compression import benchmarked_upstreams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequencePoint:
    """One benchmarked MelHuBERT: its output frame rate and how it gets there."""

    upstream: str  # the report's row label
    rate_hz: float
    segmentation: str  # none (uncompressed), fixed, conv, units or alignment
    method: str  # the pre-training method (melhubert, distilhubert) when known
    target_rate: str  # upsample or subsample (compressed MelHuBERT pre-training), else ""
    layers: int
    macs_per_second: float | None
    distortions: str = ""  # a distilled student's cross-distortion mapping (its teacher heard clean audio)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except Exception as e:  # noqa: BLE001 - unreadable: the point is left off
        log.debug("%s: unreadable (%s)", path, e)
        return None


def _macs_per_second(folder: Path) -> float | None:
    from speechrep.compress.profile import count_macs
    from speechrep.upstream.loading import load_upstream

    try:
        model = load_upstream(folder).eval()
        wavs = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
        by_kind, _, _ = count_macs(model, wavs, torch.tensor([16000]))
    except Exception as e:  # noqa: BLE001 - a folder that no longer loads has no cost shown
        log.debug("%s: MACs not counted (%s)", folder, e)
        return None
    return float(sum(by_kind.values()))


def _point(label: str, folder: Path) -> SequencePoint | None:
    meta = _read(folder / "config.json")
    if not isinstance(meta, dict) or meta.get("family") != "melhubert":
        return None
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    k = int(config.get("downsample", 1))
    stride = 160 * int(config.get("stack_frames", 2))
    segmentation = str(config.get("segmentation", "fixed"))
    if k == 1 and segmentation == "fixed":
        segmentation = "none"
    elif segmentation == "fixed" and config.get("pooling") == "conv":
        segmentation = "conv"
    provenance = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    method = str(provenance.get("method", ""))
    run = provenance.get("config") if isinstance(provenance.get("config"), dict) else {}
    target = str(run.get("target_rate", "")) if segmentation != "none" and method == "melhubert" else ""
    distortions = run.get("distortions") if method == "distilhubert" else None
    return SequencePoint(label, 16000 / stride / k, segmentation, method, target,
                         int(config.get("num_layers", 0)), _macs_per_second(folder),
                         ",".join(map(str, distortions)) if isinstance(distortions, list) else "")


def read_sequence(rows: Sequence[Mapping[str, Any]], bench_dir: Path) -> list[SequencePoint]:
    """The MelHuBERT points of the benchmark(s) behind `rows`; [] when none of them is compressed."""
    points: list[SequencePoint] = []
    for folder in dict.fromkeys(Path(r.get("run_root", bench_dir)) for r in rows):
        labels = {r.get("run_label", r["upstream"]): r["upstream"] for r in rows
                  if Path(r.get("run_root", bench_dir)) == folder}
        sources, _ = benchmarked_upstreams(folder)
        for run_label, (_, path) in sources.items():
            if run_label in labels and path is not None:
                point = _point(labels[run_label], path)
                if point is not None:
                    points.append(point)
    return points if any(p.segmentation != "none" for p in points) else []

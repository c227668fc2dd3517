"""DeLoRes-S pre-training (Ghosh et al. 2022, https://arxiv.org/abs/2203.13628): Barlow Twins for audio.

The Barlow Twins objective (`speechrep.pretrain.barlow_twins.BarlowTwinsObjective`: cross-correlation of the
two views' projector outputs driven to the identity, λ for the off-diagonal) on BYOL-A's log-mel views
(mixup with a memory, random resize crop, pre-/post-normalisation) with BYOL-A's encoder (d = 2048), trained
with Adam on a small subset of AudioSet plus FSD50K in the paper. What differs from `barlow_twins` here is
only the configuration: the audio recipe's settings. The projector widths and λ follow Barlow Twins
(8192 × 3, 5·10⁻³); they were not checked against the DeLoRes release.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.pretrain.barlow_twins import BarlowTwinsObjective
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.joint_embedding import ViewConfig
from speechrep.train import TrainConfig


@dataclass
class Config:
    """DeLoRes-S: BYOL-A encoder (d 2048) and views, Barlow Twins projector and λ, Adam 1e-4 (unverified)."""

    upstream: str = "byol_a"
    model: dict[str, Any] = field(default_factory=dict)
    views: ViewConfig = field(default_factory=ViewConfig)
    projector: list[int] = field(default_factory=lambda: [8192, 8192, 8192])
    lambd: float = 5e-3
    min_std: float = 0.05
    min_rank_fraction: float = 0.1
    stats_seconds: float = 3600.0
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=1280.0, max_utterance=10.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=1e-4, eval_every=2000, log_every=100))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train DeLoRes-S on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("delores", BarlowTwinsObjective(upstream, cfg), upstream, cfg, data, run_dir)

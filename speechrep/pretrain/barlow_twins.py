"""Barlow Twins pre-training (Zbontar et al. 2021, https://arxiv.org/abs/2103.03230) on log-mel views.

Two augmented views of a random segment of each utterance (BYOL-A's views: `joint_embedding.LogMelViews`) go
through the same encoder (BYOL-A's CNN, `speechrep.upstream.byol_a`, mean + max pooled over time) and a
projector (three linear layers, 8192 wide, batch norm and ReLU between them); the cross-correlation matrix of
the two views' batch-standardised projector outputs is driven to the identity: Σᵢ (1 − cᵢᵢ)² + λ Σᵢ≠ⱼ cᵢⱼ²,
λ = 5·10⁻³. The paper trains ResNet-50 on ImageNet with LARS (batch 2048); here AdamW (the shared loop has
no LARS). The encoder's embeddings are watched for collapse (`CollapseMonitor`: `emb_*` scalars).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.errors import SpeechrepError
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.joint_embedding import (
    CollapseMonitor,
    LogMelViews,
    ViewConfig,
    barlow_twins_loss,
    embed,
    make_views,
    mlp,
)
from speechrep.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Config:
    """Barlow Twins: projector 8192-8192-8192, λ 5e-3 (the paper); BYOL-A's encoder, views and Adam."""

    upstream: str = "byol_a"
    model: dict[str, Any] = field(default_factory=dict)  # hub config overrides, e.g. {hidden_size: 512}
    views: ViewConfig = field(default_factory=ViewConfig)
    projector: list[int] = field(default_factory=lambda: [8192, 8192, 8192])  # widths after the encoder's d
    lambd: float = 5e-3  # weight of the off-diagonal (redundancy) term
    min_std: float = 0.05  # collapse warning: mean normalised per-dimension std below this
    min_rank_fraction: float = 0.1  # ... or effective rank below this share of min(batch, d)
    stats_seconds: float = 3600.0  # audio read for the log-mel pre-normalisation statistics
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=2560.0, max_utterance=10.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=3e-4, warmup_steps=1000, schedule="cosine", eval_every=2000, log_every=100))


def require_pairs(n: int, method: str) -> None:
    """Batch statistics need two utterances or more."""
    if n < 2:
        raise SpeechrepError(f"{method}: a batch of {n} utterance(s); batch statistics need at least 2 "
                             "(raise data.max_duration)")


class BarlowTwinsObjective(nn.Module):
    """The encoder, the views and the projector; forward gives the Barlow Twins loss of the two views."""

    def __init__(self, upstream: nn.Module, cfg: Any):
        super().__init__()
        self.upstream, self.lambd = upstream, cfg.lambd
        self.views = LogMelViews(cfg.views, upstream.config.num_mel_bins)
        self.projector = mlp([upstream.config.hidden_size, *cfg.projector])
        self.monitor = CollapseMonitor("emb_", cfg.min_std, cfg.min_rank_fraction)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        require_pairs(len(batch.wav_lens), "Barlow Twins")
        one, two = make_views(self.upstream, self.views, batch)
        y1, y2 = embed(self.upstream, one), embed(self.upstream, two)
        loss = barlow_twins_loss(self.projector(y1).float(), self.projector(y2).float(), self.lambd)
        return loss, self.monitor(y1)


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train Barlow Twins on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("barlow_twins", BarlowTwinsObjective(upstream, cfg), upstream, cfg, data, run_dir)

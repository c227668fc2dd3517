"""VICReg pre-training (Bardes et al. 2022, https://arxiv.org/abs/2105.04906) on log-mel views.

BYOL-A's views and encoder as `barlow_twins`, an expander of three linear layers (8192 wide), and the loss
λ·invariance (MSE between the two views' expander outputs) + μ·variance (hinge relu(γ − std) per dimension,
γ = 1, std = sqrt(var + ε), ε = 10⁻⁴) + ν·covariance (squared off-diagonal covariances summed, / D), with
λ = μ = 25, ν = 1 (`joint_embedding.vicreg_loss`, the paper's Algorithm 1). The paper uses LARS; here AdamW.
The three terms and the encoder's collapse monitors (`emb_*`) are logged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.pretrain.barlow_twins import require_pairs
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.joint_embedding import (
    CollapseMonitor,
    LogMelViews,
    ViewConfig,
    embed,
    make_views,
    mlp,
    vicreg_loss,
)
from speechrep.train import TrainConfig


@dataclass
class Config:
    """VICReg: expander 8192-8192-8192, weights 25/25/1, γ 1, ε 1e-4 (the paper), BYOL-A encoder and views."""

    upstream: str = "byol_a"
    model: dict[str, Any] = field(default_factory=dict)
    views: ViewConfig = field(default_factory=ViewConfig)
    projector: list[int] = field(default_factory=lambda: [8192, 8192, 8192])  # the expander
    sim_coeff: float = 25.0  # λ: invariance
    std_coeff: float = 25.0  # μ: variance
    cov_coeff: float = 1.0  # ν: covariance
    gamma: float = 1.0  # target std of every dimension
    eps: float = 1e-4
    min_std: float = 0.05
    min_rank_fraction: float = 0.1
    stats_seconds: float = 3600.0
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=2560.0, max_utterance=10.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=3e-4, warmup_steps=1000, schedule="cosine", eval_every=2000, log_every=100))


class VICRegObjective(nn.Module):
    """The encoder, the views and the expander; forward gives the VICReg loss and its three terms."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        self.views = LogMelViews(cfg.views, upstream.config.num_mel_bins)
        self.expander = mlp([upstream.config.hidden_size, *cfg.projector])
        self.monitor = CollapseMonitor("emb_", cfg.min_std, cfg.min_rank_fraction)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        require_pairs(len(batch.wav_lens), "vicreg")
        one, two = make_views(self.upstream, self.views, batch)
        y1, y2 = embed(self.upstream, one), embed(self.upstream, two)
        loss, terms = vicreg_loss(self.expander(y1).float(), self.expander(y2).float(), cfg.sim_coeff,
                                  cfg.std_coeff, cfg.cov_coeff, cfg.gamma, cfg.eps)
        return loss, {**{k: float(v.detach()) for k, v in terms.items()}, **self.monitor(y1)}


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train VICReg on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("vicreg", VICRegObjective(upstream, cfg), upstream, cfg, data, run_dir)

"""BYOL-A pre-training (Niizumi et al. 2021, https://arxiv.org/abs/2103.06695): BYOL on log-mel views.

Two views of a random 0.96 s log-mel segment of each utterance (`joint_embedding.LogMelViews`: pre-normalised
with corpus statistics, mixup with a memory of 2048 past segments, random resize crop, post-normalised over
the batch). The online network (BYOL-A's encoder `speechrep.upstream.byol_a`, mean + max pooled; a projector
d → 4096 → 256; a predictor 256 → 4096 → 256) predicts the target network's projection of the other view;
the target (encoder + projector) is an exponential moving average of the online ones, τ = 0.99 fixed as
BYOL-A (or BYOL's cosine ramp from τ to 1: `ema_schedule: cosine`), never trained by gradients, kept in
the training checkpoint, not exported. Loss: 2 − 2·cos(p, sg(z)), symmetrised over the two views (summed) and
averaged over the batch. Adam 3e-4 as BYOL-A. The online encoder's embeddings are watched for collapse.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.errors import ConfigError
from speechrep.pretrain.barlow_twins import require_pairs
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.data2vec import ema_update
from speechrep.pretrain.joint_embedding import (
    CollapseMonitor,
    LogMelViews,
    ViewConfig,
    byol_loss,
    embed,
    make_views,
    mlp,
)
from speechrep.train import TrainConfig


@dataclass
class Config:
    """BYOL-A: d 2048, projector/predictor 4096 → 256, τ 0.99, Adam 3e-4, batch 256 segments (the paper)."""

    upstream: str = "byol_a"
    model: dict[str, Any] = field(default_factory=dict)
    views: ViewConfig = field(default_factory=ViewConfig)
    projector: list[int] = field(default_factory=lambda: [4096, 256])  # widths after the encoder's d
    predictor: list[int] = field(default_factory=lambda: [4096, 256])  # widths after the projection
    ema_decay: float = 0.99  # τ
    ema_schedule: Literal["constant", "cosine"] = "constant"  # cosine: BYOL's 1 − (1 − τ)(cos(πk/K) + 1)/2
    min_std: float = 0.05
    min_rank_fraction: float = 0.1
    stats_seconds: float = 3600.0
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=2560.0, max_utterance=10.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=3e-4, schedule="constant", eval_every=2000, log_every=100))

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"key 'ema_decay': must be in [0, 1], got {self.ema_decay}")
        if self.projector[-1] != self.predictor[-1]:
            raise ConfigError(f"keys projector/predictor: the predictor must end at the projection's width "
                              f"{self.projector[-1]}, not {self.predictor[-1]}")


def target_decay(step: int, base: float, max_steps: int, schedule: str) -> float:
    """τ after `step` updates: `base` (constant) or BYOL's cosine ramp from `base` to 1 over `max_steps`."""
    if schedule == "constant":
        return base
    return 1 - (1 - base) * (math.cos(math.pi * min(step, max_steps) / max_steps) + 1) / 2


class BYOLAObjective(nn.Module):
    """Online encoder + projector + predictor against an EMA target encoder + projector."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        self.views = LogMelViews(cfg.views, upstream.config.num_mel_bins)
        self.projector = mlp([upstream.config.hidden_size, *cfg.projector])
        self.predictor = mlp([cfg.projector[-1], *cfg.predictor])
        self.target = nn.ModuleDict({"encoder": copy.deepcopy(upstream),
                                     "projector": copy.deepcopy(self.projector)})
        self.target.requires_grad_(False)
        self.monitor = CollapseMonitor("emb_", cfg.min_std, cfg.min_rank_fraction)

    @torch.no_grad()
    def update_target(self, step: int) -> float:
        """One EMA step of the target after optimizer update `step`; returns the τ used."""
        cfg = self.cfg
        decay = target_decay(step, cfg.ema_decay, cfg.train.max_steps, cfg.ema_schedule)
        ema_update(self.target["encoder"], self.upstream, decay)
        ema_update(self.target["projector"], self.projector, decay)
        return decay

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        require_pairs(len(batch.wav_lens), "BYOL-A")
        one, two = make_views(self.upstream, self.views, batch)
        y1, y2 = embed(self.upstream, one), embed(self.upstream, two)
        p1, p2 = self.predictor(self.projector(y1)), self.predictor(self.projector(y2))
        with torch.no_grad():
            encoder, projector = self.target["encoder"], self.target["projector"]
            z1, z2 = projector(embed(encoder, one)), projector(embed(encoder, two))
        loss = (byol_loss(p1.float(), z2.float()) + byol_loss(p2.float(), z1.float())).mean()
        return loss, self.monitor(y1)


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train BYOL-A on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    objective = BYOLAObjective(upstream, cfg)  # the target starts as a copy, corpus statistics included
    return run_pretraining("byol_a", objective, upstream, cfg, data, run_dir,
                           after_step=lambda model, step: model.update_target(step))

"""Audio ALBERT pre-training (Chi et al. 2021, arXiv:2005.08575): Mockingjay with shared layers.

The objective is Mockingjay's (`speechrep.pretrain.mockingjay.MaskedReconstruction`: 15 % of frames in spans,
zeroed/replaced/kept 80/10/10, L1 on them); the encoder applies one transformer layer's parameters at every
depth (`share_layers`), so a 6-layer model has the parameters of one layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.mockingjay import Alteration, MaskedReconstruction
from speechrep.train import TrainConfig


@dataclass
class Config:
    """Audio ALBERT pre-training: one 768-wide layer shared by 6, unstacked 80 log-mel, AdamW 2e-4."""

    upstream: str = "audio_albert"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 3}
    alteration: Alteration = field(default_factory=lambda: Alteration(time_span=7))
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=20.0))
    stats_seconds: float = 3600.0  # audio read for the log-mel statistics of a `corpus_norm` encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=500_000, lr=2e-4, warmup_steps=35_000, grad_accum=4, clip_norm=5.0, eval_every=10_000,
        log_every=100))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train Audio ALBERT on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    if not getattr(upstream.config, "share_layers", False):
        raise ConfigError(f"Audio ALBERT: upstream {cfg.upstream!r} does not share its layers "
                          "(set model.share_layers=true)")
    objective = MaskedReconstruction(upstream, cfg.alteration)
    return run_pretraining("audio_albert", objective, upstream, cfg, data, run_dir)

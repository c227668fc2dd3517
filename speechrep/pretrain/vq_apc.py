"""VQ-APC pre-training (Chung et al. 2020, https://arxiv.org/abs/2005.08392): APC through a VQ bottleneck.

The last GRU layer is quantized by a Gumbel-softmax VQ layer (hard codes, straight-through gradients) before
the postnet predicts the log-mel frame `n_future` steps ahead (L1); the codebook perplexity and usage are
logged and a collapse is warned about (`CodebookMonitor`). The objective is APC's (`APCObjective`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError
from speechrep.pretrain.apc import APCObjective
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.train import TrainConfig


@dataclass
class Config:
    """VQ-APC pre-training: 3-layer GRU 512, 512-code VQ on the last layer, 5 frames ahead, Adam 1e-3."""

    upstream: str = "vq_apc"
    model: dict[str, Any] = field(default_factory=dict)  # hub config overrides, e.g. {vq_codebook_size: 128}
    data: PretrainData = field(default_factory=PretrainData)
    stats_seconds: float = 3600.0  # audio read for the log-mel statistics of a `corpus_norm` encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000, lr=1e-3, clip_norm=5.0,
                                                                   eval_every=2000, log_every=100))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train VQ-APC on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    if not getattr(upstream.config, "vq_codebook_size", 0):
        raise ConfigError(f"VQ-APC: upstream {cfg.upstream!r} has no VQ layer "
                          "(set model.vq_codebook_size > 0)")
    return run_pretraining("vq_apc", APCObjective(upstream), upstream, cfg, data, run_dir)

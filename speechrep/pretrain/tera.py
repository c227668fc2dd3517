"""TERA pre-training: Transformer Encoder Representations from Alteration (Liu et al. 2021, arXiv:2007.06028).

Mockingjay's objective (`speechrep.pretrain.mockingjay.MaskedReconstruction`, L1 on the altered positions)
with three alterations of unstacked log-mel: time (15 % of frames in spans of 7, zeroed/replaced/kept
80/10/10), frequency (one zeroed band of up to 20 % of the channels per utterance) and magnitude (Gaussian
noise, σ 0.2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.pretrain.mockingjay import Alteration, MaskedReconstruction
from speechrep.train import TrainConfig


@dataclass
class Config:
    """TERA pre-training: 3 layers × 768 on unstacked 80 log-mel; time, frequency, magnitude; AdamW 2e-4."""

    upstream: str = "tera_base"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 6}
    alteration: Alteration = field(default_factory=lambda: Alteration(time_span=7, freq_fraction=0.2,
                                                                      noise_prob=0.15))
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=20.0))
    stats_seconds: float = 3600.0  # audio read for the log-mel statistics of a `corpus_norm` encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=1_000_000, lr=2e-4, warmup_steps=70_000, grad_accum=4, clip_norm=5.0, eval_every=50_000,
        log_every=100))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train TERA on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    objective = MaskedReconstruction(upstream, cfg.alteration)
    return run_pretraining("tera", objective, upstream, cfg, data, run_dir)

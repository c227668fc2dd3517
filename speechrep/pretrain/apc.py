"""APC pre-training (Chung et al. 2019, https://arxiv.org/abs/1904.03240): predict the log-mel frame n steps ahead.

The reference shape of a method file: config → objective module → run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.apc import APCHead
from speechrep.upstream.loading import load_upstream


@dataclass
class Config:
    """APC pre-training: the paper's settings (Adam 1e-3, batch 32 utterances ≈ 320 s, 100 epochs of LibriSpeech 360)."""

    upstream: str = "apc"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {n_future: 5}
    data: PretrainData = field(default_factory=PretrainData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000, lr=1e-3, clip_norm=5.0,
                                                                   eval_every=2000, log_every=100))


class APCObjective(nn.Module):
    """The APC upstream plus its postnet; forward gives the L1 loss of predicting `n_future` frames ahead."""

    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.upstream = upstream
        self.head = APCHead(upstream.config)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        out = self.upstream.forward_features(feats, lengths)
        return self.head.loss(out.hidden_states[-1], feats, lengths), {}


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train APC on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    return run_pretraining("apc", APCObjective(upstream), upstream, cfg, data, run_dir)

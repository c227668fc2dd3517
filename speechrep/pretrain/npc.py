"""NPC pre-training: non-autoregressive predictive coding (Liu, Chung & Glass 2021, arXiv:2011.00406).

Each log-mel frame is reconstructed (L1) from its quantized masked-convolution representation, which sees only
the frames around it, never the frame itself nor its `mask_size` neighbours (`speechrep.upstream.npc`). The VQ
layer's codebook perplexity and usage are logged and a collapse is warned about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.pretrain.apc import CodebookMonitor
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.loading import load_upstream
from speechrep.upstream.npc import NPCHead


@dataclass
class Config:
    """NPC pre-training: 4 conv blocks of 512, masked kernel 15, input mask 5, VQ 4 × 64, Adam 1e-3."""

    upstream: str = "npc"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {mask_size: 3}
    data: PretrainData = field(default_factory=PretrainData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000, lr=1e-3, clip_norm=5.0,
                                                                   eval_every=2000, log_every=100))


class NPCObjective(nn.Module):
    """The NPC upstream plus its postnet; forward: the L1 loss of reconstructing each frame from context."""

    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.upstream = upstream
        self.head = NPCHead(upstream.config)
        self.monitor = CodebookMonitor(upstream.config.vq_groups, upstream.config.vq_codebook_size)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        out, vq = self.upstream.encode(feats, lengths)
        return self.head.loss(out.hidden_states[-1], feats, lengths), self.monitor(vq)


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train NPC on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    return run_pretraining("npc", NPCObjective(upstream), upstream, cfg, data, run_dir)

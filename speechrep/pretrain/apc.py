"""APC pre-training (Chung et al. 2019, https://arxiv.org/abs/1904.03240): predict the log-mel frame n steps ahead.

The reference shape of a method file: config → objective module → run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.nn.quantizers import QuantizerOutput
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.apc import APCHead

log = logging.getLogger(__name__)


@dataclass
class Config:
    """APC pre-training: the paper's settings (Adam 1e-3, batch 32 utterances ≈ 320 s, 100 epochs of LibriSpeech 360)."""

    upstream: str = "apc"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {n_future: 5}
    data: PretrainData = field(default_factory=PretrainData)
    stats_seconds: float = 3600.0  # audio read for the log-mel statistics of a `corpus_norm` encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000, lr=1e-3, clip_norm=5.0,
                                                                   eval_every=2000, log_every=100))


class CodebookMonitor:
    """Codebook usage of a VQ layer as scalars to log, with a warning when the codebook collapses.

    `code_perplexity` is the quantizer's perplexity (summed over groups, at most groups × entries) and
    `code_usage` that perplexity as a share of all codes. The codebook counts as collapsed when the
    perplexity per group falls below `collapse_below` effective codes; the warning is logged on entering
    that state, not at every step, and again only after a recovery to twice that perplexity.
    """

    def __init__(self, groups: int, entries: int, collapse_below: float = 2.0):
        self.groups, self.entries, self.collapse_below = groups, entries, collapse_below
        self.collapsed = False

    def __call__(self, vq: QuantizerOutput) -> dict[str, float]:
        """Scalars for one batch's quantizer output; warns once per collapse."""
        perplexity = float(vq.perplexity.detach())
        per_group = perplexity / self.groups
        if per_group < self.collapse_below and not self.collapsed:
            log.warning("VQ codebook collapse: perplexity %.2f over %d group(s) of %d codes "
                        "(below %.1f per group)", perplexity, self.groups, self.entries, self.collapse_below)
            self.collapsed = True
        elif per_group >= 2 * self.collapse_below:  # hysteresis: no warning storm around the threshold
            self.collapsed = False
        return {"code_perplexity": perplexity, "code_usage": perplexity / (self.groups * self.entries)}


class APCObjective(nn.Module):
    """The APC upstream plus its postnet; forward gives the L1 loss of predicting `n_future` frames ahead.

    With a VQ layer (VQ-APC) the postnet reads the quantized last layer and the codebook usage is logged.
    """

    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.upstream = upstream
        self.head = APCHead(upstream.config)
        c = upstream.config
        self.monitor = CodebookMonitor(c.vq_groups, c.vq_codebook_size) if c.vq_codebook_size else None

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        out, vq = self.upstream.encode(feats, lengths)
        loss = self.head.loss(out.hidden_states[-1], feats, lengths)
        return loss, ({} if vq is None or self.monitor is None else self.monitor(vq))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train APC on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("apc", APCObjective(upstream), upstream, cfg, data, run_dir)

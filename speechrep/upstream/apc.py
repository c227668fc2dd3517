"""APC and VQ-APC: autoregressive predictive coding on log-mel.

APC (Chung et al. 2019, https://arxiv.org/abs/1904.03240): a unidirectional 3-layer GRU (512) with residual
connections between GRU layers reads 80-dim log-mel frames (per-utterance CMVN, or corpus statistics with
`corpus_norm`) and, through a linear postnet, predicts the frame `n_future` steps ahead under an L1 loss.
VQ-APC (Chung et al. 2020, https://arxiv.org/abs/2005.08392) quantizes the last GRU layer with a
Gumbel-softmax VQ layer (512 codes) before the postnet. The GRU reads log-mel directly (no input projection,
as in the paper), so the hidden states are the outputs of the GRU layers, all 512-dim (VQ-APC adds a fourth:
the quantized last layer), one per frame: stride 160, frames = 1 + (samples − 400) // 160. The postnet is
pre-training only (`APCHead`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.nn.quantizers import GumbelVectorQuantizer, QuantizerOutput
from speechrep.nn.rnn import RNNStack
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.baselines import (HOP, SAMPLE_RATE, CorpusStatistics, log_mel_features,
                                         log_mel_geometry, require_one_frame)
from speechrep.upstream.registry import register_family, register_upstream


@dataclass(frozen=True)
class APCConfig:
    """Architecture of APC / VQ-APC."""

    num_mel_bins: int = 80
    hidden_size: int = 512
    num_layers: int = 3
    residual: bool = True
    dropout: float = 0.1
    n_future: int = 3  # pre-training: predict the frame this many steps ahead
    vq_codebook_size: int = 0  # VQ-APC: entries per group of the VQ layer on the last GRU layer (0: APC)
    vq_groups: int = 1
    vq_temperature: float = 0.5
    corpus_norm: bool = False  # standardise log-mel with corpus statistics (buffers), not per utterance


@register_family
class APC(CorpusStatistics, nn.Module):
    """APC / VQ-APC upstream (satisfies the Upstream protocol)."""

    family = "apc"
    config_class = APCConfig
    sample_rate = SAMPLE_RATE
    stride = HOP

    def __init__(self, config: APCConfig):
        super().__init__()
        self.config = config
        self.rnn = RNNStack(config.num_mel_bins, config.hidden_size, config.num_layers, "gru",
                            residual=config.residual, dropout=config.dropout)
        self.vq = (GumbelVectorQuantizer(config.hidden_size, config.hidden_size, config.vq_codebook_size,
                                         groups=config.vq_groups, temperature=config.vq_temperature,
                                         grouped_input=True)
                   if config.vq_codebook_size else None)
        self.hidden_sizes = [config.hidden_size] * (config.num_layers + (self.vq is not None))
        if config.corpus_norm:
            self.register_feature_stats(config.num_mel_bins)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """One 25 ms log-mel frame per output frame (per-utterance CMVN unless `corpus_norm`)."""
        return log_mel_geometry(self.stride, frame_local=self.config.corpus_norm)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel input (B, T', 80), standardised per utterance (or with the corpus statistics when
        `corpus_norm`), and its frame lengths."""
        require_one_frame(wav_lens, self.frame_geometry, self.family)
        corpus_norm = self.config.corpus_norm
        feats, lengths = log_mel_features(wavs, wav_lens, self.config.num_mel_bins, cmvn=not corpus_norm)
        return (self.standardise(feats, lengths) if corpus_norm else feats), lengths

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[UpstreamOutput, QuantizerOutput | None]:
        """Hidden states from log-mel features, plus the VQ layer's output (codes, perplexity) for VQ-APC."""
        states, vq = self.rnn(feats, lengths), None
        if self.vq is not None:
            mask = padding_mask(lengths, feats.shape[1])
            vq = self.vq(states[-1], mask)
            states.append(vq.quantized * mask[..., None])
        return UpstreamOutput(states, lengths), vq

    def forward_features(self, feats: Tensor, lengths: Tensor) -> UpstreamOutput:
        """Hidden states from precomputed log-mel features (B, T', num_mel_bins)."""
        return self.encode(feats, lengths)[0]

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Hidden states of every GRU layer for a padded batch of 16 kHz waveforms."""
        return self.forward_features(*self.input_features(wavs, wav_lens))


class APCHead(nn.Module):
    """Pre-training only: postnet predicting the frame `n_future` ahead from the last (quantized) state."""

    def __init__(self, config: APCConfig):
        super().__init__()
        self.n_future = config.n_future
        self.postnet = nn.Linear(config.hidden_size, config.num_mel_bins)

    def loss(self, last_hidden: Tensor, feats: Tensor, lengths: Tensor) -> Tensor:
        """Mean L1 between predictions at t and the input frames at t + n_future, valid pairs only."""
        n = self.n_future
        pred, target = self.postnet(last_hidden[:, :-n]), feats[:, n:]
        mask = padding_mask((lengths - n).clamp(min=0), pred.shape[1])[..., None]
        err = F.l1_loss(pred, target, reduction="none") * mask
        return err.sum() / (mask.sum() * feats.shape[-1]).clamp(min=1)


@register_upstream("apc")
def apc(**overrides: Any) -> APC:
    """APC: 3-layer residual GRU 512 on 80 log-mel (the paper's configuration, 4.06M parameters)."""
    return APC(replace(APCConfig(), **overrides))


@register_upstream("apc_tiny")
def apc_tiny(**overrides: Any) -> APC:
    """A small APC for tests."""
    return APC(replace(APCConfig(num_mel_bins=80, hidden_size=32, num_layers=2), **overrides))


@register_upstream("vq_apc")
def vq_apc(**overrides: Any) -> APC:
    """VQ-APC: APC with a 512-code Gumbel VQ layer on the last GRU layer, predicting 5 frames ahead."""
    return APC(replace(APCConfig(vq_codebook_size=512, n_future=5), **overrides))


@register_upstream("vq_apc_tiny")
def vq_apc_tiny(**overrides: Any) -> APC:
    """A small VQ-APC (two 8-code groups) for tests."""
    return APC(replace(APCConfig(hidden_size=32, num_layers=2, vq_codebook_size=8, vq_groups=2), **overrides))

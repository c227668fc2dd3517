"""BYOL-A's audio encoder (Niizumi et al. 2021, https://arxiv.org/abs/2103.06695), frame by frame.

The encoder of BYOL-A (`AudioNTT2020` in the authors' code), also used by the audio Barlow Twins / VICReg /
DeLoRes-S recipes here: 64-bin log-mel standardised with corpus statistics ("pre-normalisation"), three conv
blocks (3×3 conv with 64 channels, batch norm, ReLU, 2×2 max pool), then per frame an MLP over the flattened
(channel × frequency) features: Linear(64·F/8, d), ReLU, dropout 0.3, Linear(d, d), ReLU. The paper's
utterance embedding is the temporal mean plus the temporal max of the MLP output (`pool`); as an upstream it
returns frames instead, one per 8 log-mel frames (stride 1280 samples, 80 ms): the three conv blocks' outputs
(flattened over channel × frequency; blocks 1 and 2 averaged over time down to the final frame rate), then the
two MLP layers, d each. Frames = (1 + (samples − 400) // 160) // 8.

Deviation: the log-mel front end is speechrep's Kaldi filterbank (25 ms window, 10 ms hop), not BYOL-A's
64 ms / 10 ms librosa-style mel; the pre-normalisation statistics are buffers filled from the training audio
(`set_feature_stats`), identity until then. Padded frames are zeroed after every block, so a padded batch
equals the utterances run one by one (in eval mode: batch norm uses its running statistics).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.baselines import (
    HOP,
    SAMPLE_RATE,
    WINDOW,
    CorpusStatistics,
    log_mel_features,
    require_one_frame,
)
from speechrep.upstream.registry import register_family, register_upstream


@dataclass(frozen=True)
class BYOLAConfig:
    """Architecture of the BYOL-A encoder."""

    num_mel_bins: int = 64
    channels: int = 64  # of each conv block
    num_blocks: int = 3  # conv blocks, each halving time and frequency
    hidden_size: int = 2048  # d: width of the per-frame MLP and of the embedding
    dropout: float = 0.3


class _ConvBlock(nn.Module):
    """3×3 conv, batch norm, ReLU, 2×2 max pool on (B, C, F, T)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.norm(self.conv(x))), 2)


@register_family
class BYOLA(CorpusStatistics, nn.Module):
    """The BYOL-A encoder as an upstream (satisfies the Upstream protocol)."""

    family = "byol_a"
    config_class = BYOLAConfig
    sample_rate = SAMPLE_RATE

    def __init__(self, config: BYOLAConfig):
        super().__init__()
        if config.num_mel_bins % (2 ** config.num_blocks):
            raise ValueError(f"num_mel_bins {config.num_mel_bins} must divide by 2^{config.num_blocks}")
        self.config = config
        c = config.channels
        self.blocks = nn.ModuleList(_ConvBlock(1 if i == 0 else c, c) for i in range(config.num_blocks))
        self.reduction = 2 ** config.num_blocks
        flat = c * config.num_mel_bins // self.reduction
        self.fc1 = nn.Linear(flat, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.stride = HOP * self.reduction
        self.hidden_sizes = [c * config.num_mel_bins // 2 ** (i + 1) for i in range(config.num_blocks)]
        self.hidden_sizes += [config.hidden_size, config.hidden_size]
        self.register_feature_stats(config.num_mel_bins)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """Each conv block adds 2 frames of context at its input rate and a pool; padding 1 per conv."""
        frames, rate, offset = 1, 1, 0
        for _ in range(self.config.num_blocks):
            frames += 2 * rate + rate  # 3-wide conv, then a 2-wide pool
            offset += rate
            rate *= 2
        return FrameGeometry(WINDOW + (frames - 1) * HOP, self.stride, offset * HOP, offset * HOP, True)

    def log_mel(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T', bins) log-mel standardised with the corpus statistics, and its frame lengths."""
        require_one_frame(wav_lens, self.frame_geometry, self.family)
        feats, lengths = log_mel_features(wavs, wav_lens, self.config.num_mel_bins, cmvn=False)
        return self.standardise(feats, lengths), lengths

    def forward_features(self, feats: Tensor, lengths: Tensor) -> UpstreamOutput:
        """Hidden states of every block from (B, T', bins) normalised log-mel (padded frames zero)."""
        x = feats.transpose(1, 2)[:, None]  # (B, 1, F, T)
        blocks, block_lengths = [], lengths
        for block in self.blocks:
            x = block(x)
            block_lengths = block_lengths // 2
            x = x * padding_mask(block_lengths, x.shape[-1])[:, None, None].to(x.dtype)
            blocks.append(x)
        out_lengths = block_lengths
        frames = x.shape[-1]
        states = []
        for i, h in enumerate(blocks):
            flat = h.flatten(1, 2)  # (B, C·F', T_i)
            pool = 2 ** (len(blocks) - 1 - i)
            if pool > 1:  # to the final frame rate
                flat = F.avg_pool1d(flat[..., : frames * pool], pool)
            states.append(flat.transpose(1, 2))
        keep = padding_mask(out_lengths, frames)[..., None].to(x.dtype)
        h1 = F.relu(self.fc1(states[-1])) * keep
        h2 = F.relu(self.fc2(self.dropout(h1))) * keep
        return UpstreamOutput(states + [h1, h2], out_lengths)

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Hidden states of every block for a padded batch of 16 kHz waveforms."""
        return self.forward_features(*self.log_mel(wavs, wav_lens))

    @staticmethod
    def pool(frames: Tensor, lengths: Tensor) -> Tensor:
        """BYOL-A's utterance embedding (B, d): temporal mean plus temporal max over the valid frames."""
        valid = padding_mask(lengths, frames.shape[1])[..., None]
        mean = (frames * valid).sum(1) / valid.sum(1).clamp(min=1)
        peak = frames.masked_fill(~valid, torch.finfo(frames.dtype).min).amax(1)
        return mean + peak


@register_upstream("byol_a")
def byol_a(**overrides: Any) -> BYOLA:
    """BYOL-A's encoder with d = 2048 (the paper's best), 64 log-mel bins."""
    return BYOLA(replace(BYOLAConfig(), **overrides))


@register_upstream("byol_a_512")
def byol_a_512(**overrides: Any) -> BYOLA:
    """BYOL-A's encoder with d = 512 (the paper's smallest)."""
    return BYOLA(replace(BYOLAConfig(hidden_size=512), **overrides))


@register_upstream("byol_a_tiny")
def byol_a_tiny(**overrides: Any) -> BYOLA:
    """A small BYOL-A encoder for tests and CPU presets."""
    return BYOLA(replace(BYOLAConfig(channels=8, hidden_size=32, dropout=0.0), **overrides))

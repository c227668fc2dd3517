"""NPC: non-autoregressive predictive coding (Liu, Chung & Glass 2021, https://arxiv.org/abs/2011.00406).

Each frame's representation is computed from its context only: a stack of convolution blocks (conv, ReLU,
residual, LayerNorm) carries the input upward, and beside every block a masked convolution reads the block's
input with the centre of its kernel zeroed, so frame t never sees frames t−m/2 … t+m/2. Because each block
widens the receptive field by kernel//2 on each side, the mask of the l-th masked convolution grows by
2·(kernel//2) per layer; its kernel grows with it, keeping (kernel − mask)//2 live taps on each side. The
masked outputs are summed and quantized by a Gumbel VQ layer; pre-training (`NPCHead`, L1) reconstructs the
masked frame. Input: 80 log-mel (per-utterance CMVN), stride 160, frames = 1 + (samples − 400) // 160.
Hidden states: input projection, the block outputs, the summed masked representation, its quantized value.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.nn.quantizers import GumbelVectorQuantizer
from speechrep.upstream.base import UpstreamOutput, padding_mask
from speechrep.upstream.baselines import HOP, SAMPLE_RATE, log_mel_features
from speechrep.upstream.registry import register_upstream


@dataclass(frozen=True)
class NPCConfig:
    """Architecture of NPC."""

    num_mel_bins: int = 80
    hidden_size: int = 512
    num_blocks: int = 4
    kernel_size: int = 15
    mask_size: int = 5
    dropout: float = 0.1
    vq_codebook_size: int = 64
    vq_temperature: float = 1.0


class MaskedConv1d(nn.Module):
    """Same-length 1-D conv whose kernel has `mask_size` zeroed centre taps and `reach` live taps per side."""

    def __init__(self, channels: int, mask_size: int, reach: int):
        super().__init__()
        self.mask_size, self.reach = mask_size, reach
        self.left = nn.Parameter(torch.empty(channels, channels, reach))
        self.right = nn.Parameter(torch.empty(channels, channels, reach))
        self.bias = nn.Parameter(torch.zeros(channels))
        for w in (self.left, self.right):
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, T) → (B, C, T); output t depends only on frames outside t ± mask_size // 2."""
        centre = self.left.new_zeros(*self.left.shape[:2], self.mask_size)
        weight = torch.cat([self.left, centre, self.right], dim=-1)
        return F.conv1d(x, weight, self.bias, padding=weight.shape[-1] // 2)


class NPC(nn.Module):
    """NPC upstream (satisfies the Upstream protocol)."""

    sample_rate = SAMPLE_RATE
    stride = HOP

    def __init__(self, config: NPCConfig):
        super().__init__()
        c = self.config = config
        if c.kernel_size % 2 == 0 or c.mask_size % 2 == 0 or c.mask_size >= c.kernel_size:
            raise ValueError(f"NPC needs odd kernel_size > odd mask_size, got {c.kernel_size}, {c.mask_size}")
        h, half = c.hidden_size, c.kernel_size // 2
        self.input_proj = nn.Linear(c.num_mel_bins, h)
        self.convs = nn.ModuleList(nn.Conv1d(h, h, c.kernel_size, padding=half) for _ in range(c.num_blocks - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(c.num_blocks - 1))
        reach = (c.kernel_size - c.mask_size) // 2
        self.masked_convs = nn.ModuleList(MaskedConv1d(h, c.mask_size + 2 * half * i, reach)
                                          for i in range(c.num_blocks))
        self.dropout = nn.Dropout(c.dropout)
        self.vq = GumbelVectorQuantizer(h, h, c.vq_codebook_size, groups=1, temperature=c.vq_temperature)
        self.hidden_sizes = [h] * (c.num_blocks + 2)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel input (B, T', 80), per-utterance CMVN, and its frame lengths."""
        return log_mel_features(wavs, wav_lens, self.config.num_mel_bins)

    def forward_features(self, feats: Tensor, lengths: Tensor) -> UpstreamOutput:
        """Hidden states from log-mel features (B, T', num_mel_bins)."""
        mask = padding_mask(lengths, feats.shape[1])
        keep = mask[..., None].to(feats.dtype)
        h = self.input_proj(feats) * keep
        states, masked_sum = [h], 0
        for i, masked_conv in enumerate(self.masked_convs):
            masked_sum = masked_sum + masked_conv(h.transpose(1, 2)).transpose(1, 2)
            if i < len(self.convs):
                update = torch.relu(self.convs[i](h.transpose(1, 2))).transpose(1, 2)
                h = self.norms[i](h + self.dropout(update)) * keep
                states.append(h)
        z = masked_sum * keep
        states += [z, self.vq(z, mask).quantized * keep]
        return UpstreamOutput(states, lengths)

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Hidden states for a padded batch of 16 kHz waveforms."""
        return self.forward_features(*self.input_features(wavs, wav_lens))


class NPCHead(nn.Module):
    """Pre-training only: reconstructs each log-mel frame from its quantized masked representation (L1)."""

    def __init__(self, config: NPCConfig):
        super().__init__()
        self.postnet = nn.Linear(config.hidden_size, config.num_mel_bins)

    def loss(self, quantized: Tensor, feats: Tensor, lengths: Tensor) -> Tensor:
        """Mean L1 reconstruction error over valid frames."""
        mask = padding_mask(lengths, feats.shape[1])[..., None]
        err = F.l1_loss(self.postnet(quantized), feats, reduction="none") * mask
        return err.sum() / (mask.sum() * feats.shape[-1]).clamp(min=1)


@register_upstream("npc")
def npc(**overrides) -> NPC:
    """NPC: 4 blocks of 512, kernel 15, mask 5, 64-code VQ, on 80 log-mel."""
    return NPC(replace(NPCConfig(), **overrides))


@register_upstream("npc_tiny")
def npc_tiny(**overrides) -> NPC:
    """A small NPC for tests."""
    return NPC(replace(NPCConfig(hidden_size=32, num_blocks=3, kernel_size=5, mask_size=1, vq_codebook_size=8),
                       **overrides))

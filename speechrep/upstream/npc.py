"""NPC: non-autoregressive predictive coding (Liu, Chung & Glass 2021, https://arxiv.org/abs/2011.00406).

Each frame's representation is computed from its context only. A stack of conv blocks (conv k=3, ReLU,
1×1 conv, BatchNorm, residual) carries the 80-dim log-mel input (per-utterance CMVN) upward; beside each block
a masked convolution (kernel 15, tanh) reads the block's output with the centre of its kernel zeroed. Each
block widens the receptive field by one frame per side, so the mask grows by two per block (7, 9, 11, 13 for
an input mask of 5): frame t never sees frames t−2 … t+2. The masked outputs are summed and quantized by a
4-group Gumbel VQ layer; pre-training (`NPCHead`, L1) reconstructs frame t from the quantized sum.
Stride 160, frames = 1 + (samples − 400) // 160. Hidden states: each block's output, the summed masked
representation (NPC's feature), its quantized value. BatchNorm uses running statistics in eval mode, where
a padded batch equals the utterances one by one; in training mode batch statistics include every frame.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.quantizers import GumbelVectorQuantizer, QuantizerOutput
from speechrep.upstream.apc import convert_s3prl_vq, s3prl_mel_options, s3prl_vq_groups
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.baselines import (
    HOP,
    SAMPLE_RATE,
    log_mel_features,
    log_mel_geometry,
    require_one_frame,
)
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import _rename


@dataclass(frozen=True)
class NPCConfig:
    """Architecture of NPC."""

    num_mel_bins: int = 80
    hidden_size: int = 512
    num_blocks: int = 4
    kernel_size: int = 15  # masked convolutions
    mask_size: int = 5  # input frames hidden from each prediction (odd)
    dropout: float = 0.1
    vq_groups: int = 4
    vq_codebook_size: int = 64  # entries per group
    vq_temperature: float = 1.0
    window_type: str = "povey"  # Kaldi fbank window; S3PRL's releases use "hamming"


class _ConvBlock(nn.Module):
    """conv k=3 → ReLU → 1×1 conv → BatchNorm → dropout (+ residual) → ReLU, on (B, C, T)."""

    def __init__(self, in_size: int, hidden: int, residual: bool, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(in_size, hidden, 3, padding=1)
        self.norm1 = nn.BatchNorm1d(hidden)
        self.linear = nn.Conv1d(hidden, hidden, 1)
        self.norm2 = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, T) → (B, hidden, T)."""
        out = self.dropout(self.norm2(self.linear(torch.relu(self.norm1(self.conv(x))))))
        return torch.relu(out + x if self.residual else out)


class MaskedConv1d(nn.Conv1d):
    """Same-length 1-D convolution whose `mask_size` centre taps are fixed at zero, followed by tanh."""

    def __init__(self, channels: int, kernel_size: int, mask_size: int):
        if not 0 < mask_size < kernel_size:
            raise ValueError(f"mask_size {mask_size} must be in (0, kernel_size={kernel_size})")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2)
        keep = torch.ones(kernel_size)
        start = (kernel_size - mask_size) // 2
        keep[start: start + mask_size] = 0
        self.register_buffer("tap_mask", keep, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, T) → (B, C, T); output t ignores inputs t − mask_size//2 … t + mask_size//2."""
        return torch.tanh(F.conv1d(x, self.weight * self.tap_mask, self.bias, padding=self.padding))


@register_family
class NPC(nn.Module):
    """NPC upstream (satisfies the Upstream protocol)."""

    family = "npc"
    config_class = NPCConfig
    sample_rate = SAMPLE_RATE
    stride = HOP

    def __init__(self, config: NPCConfig):
        super().__init__()
        c = self.config = config
        if c.kernel_size % 2 == 0 or c.mask_size % 2 == 0:
            raise ValueError(f"NPC needs odd kernel_size and mask_size, got {c.kernel_size}, {c.mask_size}")
        h = c.hidden_size
        self.blocks = nn.ModuleList(_ConvBlock(c.num_mel_bins if i == 0 else h, h, i > 0, c.dropout)
                                    for i in range(c.num_blocks))
        self.masked_convs = nn.ModuleList(MaskedConv1d(h, c.kernel_size, c.mask_size + 2 * (i + 1))
                                          for i in range(c.num_blocks))
        self.vq = GumbelVectorQuantizer(h, h, c.vq_codebook_size, groups=c.vq_groups,
                                        temperature=c.vq_temperature, grouped_input=True)
        self.hidden_sizes = [h] * (c.num_blocks + 2)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """One 25 ms log-mel frame per output frame, with per-utterance CMVN."""
        return log_mel_geometry(self.stride, frame_local=False)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel input (B, T', 80), per-utterance CMVN, and its frame lengths."""
        require_one_frame(wav_lens, self.frame_geometry, self.family)
        return log_mel_features(wavs, wav_lens, self.config.num_mel_bins, window_type=self.config.window_type)

    def forward_features(self, feats: Tensor, lengths: Tensor) -> UpstreamOutput:
        """Hidden states from log-mel features (B, T', num_mel_bins)."""
        return self.encode(feats, lengths)[0]

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[UpstreamOutput, QuantizerOutput]:
        """Hidden states from log-mel features, plus the VQ layer's output (codes, perplexity)."""
        mask = padding_mask(lengths, feats.shape[1])
        keep = mask[:, None, :].to(feats.dtype)
        x, states, masked_sum = feats.transpose(1, 2) * keep, [], 0
        for block, masked_conv in zip(self.blocks, self.masked_convs):
            # zero padding after every block so each conv sees what a lone utterance's zero padding gives
            x = block(x) * keep
            masked_sum = masked_sum + masked_conv(x)
            states.append(x.transpose(1, 2))
        z = (masked_sum * keep).transpose(1, 2)
        vq = self.vq(z, mask)
        states += [z, vq.quantized * mask[..., None]]
        return UpstreamOutput(states, lengths), vq

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


# --- checkpoint-key conversion ---
# S3PRL's NPC release (npc_360hr.ckpt, ...; s3prl/upstream/npc) is laid out as APC's (see apc.py): "model" and
# "config" with model.paras {kernel_size, mask_size, n_blocks, hidden_size, dropout, residual, batch_norm,
# activate, disable_cross_layer, vq} and data.audio. Keys: blocks.{i}.{conv,linear,bn1,bn2},
# masked_convs.{i}.conv.{weight,bias} with the persistent buffer masked_convs.{i}.conv_mask, vq_layers.{g}.*,
# and the postnet (pre-training only, dropped).

_S3PRL_RULES = [
    (r"^blocks\.(\d+)\.bn1\.", r"blocks.\1.norm1."),
    (r"^blocks\.(\d+)\.bn2\.", r"blocks.\1.norm2."),
    (r"^masked_convs\.(\d+)\.conv\.", r"masked_convs.\1."),
]
_S3PRL_IGNORED = re.compile(r"^(postnet\.|masked_convs\.\d+\.conv_mask$)")


def from_s3prl(checkpoint: dict[str, Any], source: str) -> tuple[NPCConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of an S3PRL NPC release; the postnet and the stored tap masks (ours
    are rebuilt from kernel and mask sizes) are dropped. Front-end differences as for APC (`apc.from_s3prl`);
    S3PRL returns the blocks' and the masked sum's states, we add the quantized sum."""
    config = checkpoint["config"]
    paras, audio = dict(config["model"]["paras"]), dict(config.get("data", {}).get("audio", {}))
    required = (("residual", True), ("batch_norm", True), ("activate", "relu"),
                ("disable_cross_layer", False), ("dim_bottleneck", None))
    for key, value in required:
        if paras.get(key, value) != value:
            raise ConfigError(f"{source}: NPC {key}={paras[key]!r} is not supported (only {value!r})")
    if not paras.get("vq"):
        raise ConfigError(f"{source}: NPC without a VQ layer is not supported")
    hidden = int(paras.get("hidden_size", 512))
    groups, codes, temperature = s3prl_vq_groups(paras["vq"], hidden, source)
    npc_config = NPCConfig(
        num_mel_bins=s3prl_mel_options(audio, source), hidden_size=hidden,
        num_blocks=int(paras.get("n_blocks", 4)), kernel_size=int(paras.get("kernel_size", 15)),
        mask_size=int(paras.get("mask_size", 5)), dropout=float(paras.get("dropout", 0.1)),
        vq_groups=groups, vq_codebook_size=codes, vq_temperature=temperature, window_type="hamming",
    )
    state = _rename(checkpoint["model"], _S3PRL_RULES, _S3PRL_IGNORED)
    return npc_config, convert_s3prl_vq(state, "vq_layers", groups)


@register_upstream("npc")
def npc(**overrides: Any) -> NPC:
    """NPC: 4 blocks of 512, masked kernel 15, input mask 5, VQ 4 groups × 64 codes, on 80 log-mel."""
    return NPC(replace(NPCConfig(), **overrides))


@register_upstream("npc_tiny")
def npc_tiny(**overrides: Any) -> NPC:
    """A small NPC for tests."""
    return NPC(replace(NPCConfig(hidden_size=32, num_blocks=2, kernel_size=9, mask_size=3, vq_groups=2,
                                 vq_codebook_size=8), **overrides))

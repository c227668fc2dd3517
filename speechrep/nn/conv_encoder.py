"""The wav2vec 2.0 convolutional waveform encoder: strided 1-D convolutions from samples to frames."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvLayerSpec = tuple[int, int, int]  # (out_channels, kernel, stride)
ConvNorm = Literal["group", "layer"]


def conv_output_lengths(lengths: Tensor, layers: Sequence[ConvLayerSpec]) -> Tensor:
    """Frames each input length yields after a stack of unpadded strided convolutions."""
    for _, kernel, stride in layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def conv_receptive_field(layers: Sequence[ConvLayerSpec]) -> tuple[int, int]:
    """(receptive field, stride) in input samples of one output frame of the stack."""
    field, stride = 1, 1
    for _, kernel, layer_stride in layers:
        field += (kernel - 1) * stride
        stride *= layer_stride
    return field, stride


def masked_instance_norm(x: Tensor, valid: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """GroupNorm(C, C) over time computed on valid frames only; x (B, C, T), valid (B, T) bool."""
    dtype, x = x.dtype, x.float()  # statistics in fp32 under autocast, like fairseq's Fp32GroupNorm
    mask = valid[:, None, :].float()
    count = mask.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * mask).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * mask).sum(-1, keepdim=True) / count
    x = (x - mean) * torch.rsqrt(var + eps)
    return (x * weight.float()[None, :, None] + bias.float()[None, :, None]).to(dtype)


class _KaimingConv1d(nn.Conv1d):
    """nn.Conv1d initialised as fairseq and Hugging Face initialise the wav2vec 2.0 CNN: Kaiming-normal weights,
    zero bias. PyTorch's default init shrinks the signal at each layer (seven layers: features ~1e-4 of the
    input), so the layer norm after the CNN sees mostly its epsilon and pre-training starts from near-constant
    features. Kept in `reset_parameters` so re-initialising a loaded model (e.g. an untrained control) matches."""

    def reset_parameters(self) -> None:
        """Kaiming-normal weight (fan-in, ReLU gain), zero bias."""
        nn.init.kaiming_normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class _ConvBlock(nn.Module):
    """Conv1d → optional norm (group norm over time or layer norm over channels) → GELU."""

    def __init__(self, in_channels: int, spec: ConvLayerSpec, norm: ConvNorm | None, bias: bool):
        super().__init__()
        out_channels, kernel, stride = spec
        self.conv = _KaimingConv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels, elementwise_affine=True)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        """x (B, C_in, T) → (B, C_out, T'); `valid` (B, T') is needed by group norm on padded batches."""
        x = self.conv(x)
        if self.norm_kind == "group":
            if valid is None:
                norm = self.norm
                x = F.group_norm(
                    x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps
                ).to(x.dtype)
            else:
                # statistics over valid frames only, so a padded batch equals each utterance alone
                x = masked_instance_norm(x, valid, self.norm.weight, self.norm.bias, self.norm.eps)
        elif self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class ConvFeatureEncoder(nn.Module):
    """Waveform (B, T) → frames (B, T', C). norm="group": GroupNorm on the first layer only (wav2vec2 base);
    norm="layer": LayerNorm after every layer (layer-norm-first "large" models, data2vec)."""

    def __init__(self, layers: Sequence[ConvLayerSpec], norm: ConvNorm = "group", bias: bool = False):
        super().__init__()
        self.specs = tuple(tuple(spec) for spec in layers)
        blocks, in_channels = [], 1
        for index, spec in enumerate(self.specs):
            block_norm: ConvNorm | None = norm if (norm == "layer" or index == 0) else None
            blocks.append(_ConvBlock(in_channels, spec, block_norm, bias))
            in_channels = spec[0]
        self.layers = nn.ModuleList(blocks)
        self.out_channels = in_channels

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for each input length."""
        return conv_output_lengths(lengths, self.specs)

    def forward(self, wavs: Tensor, wav_lens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) samples → ((B, T', C) frames, (B,) valid frames)."""
        x = wavs[:, None, :]
        batch, total = wavs.shape
        lengths = wav_lens if wav_lens is not None else torch.full((batch,), total, device=wavs.device)
        padded = bool((lengths < total).any())
        for block, spec in zip(self.layers, self.specs):
            lengths = conv_output_lengths(lengths, [spec])
            valid = None
            if padded and block.norm_kind == "group":
                frames = (x.shape[-1] - spec[1]) // spec[2] + 1
                valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]
            x = block(x, valid)
        return x.transpose(1, 2), lengths

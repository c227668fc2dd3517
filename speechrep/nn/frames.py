"""Frame-sequence helpers shared by upstreams and pre-training: padding masks and frame stacking."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TailRule = Literal["drop", "pad"]


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool mask, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def stack_frames(feats: Tensor, lengths: Tensor, factor: int, tail: TailRule) -> tuple[Tensor, Tensor]:
    """Concatenate each `factor` consecutive frames: (B, T, D) → (B, T', factor·D).

    A tail of fewer than `factor` frames is dropped (`tail="drop"`: T' = T // factor, Mockingjay/TERA) or
    zero-filled into one last group (`tail="pad"`: T' = ceil(T / factor), MelHuBERT and k-means targets);
    `lengths` follow the same rule."""
    if tail not in ("drop", "pad"):
        raise ValueError(f"stack_frames: tail must be 'drop' or 'pad', got {tail!r}")
    if factor == 1:
        return feats, lengths
    batch, frames, dim = feats.shape
    if tail == "drop":
        kept = frames // factor * factor
        return feats[:, :kept].reshape(batch, kept // factor, dim * factor), lengths // factor
    feats = F.pad(feats, (0, 0, 0, (-frames) % factor))
    padded_lengths = torch.div(lengths + factor - 1, factor, rounding_mode="floor")
    return feats.reshape(batch, -1, factor * dim), padded_lengths

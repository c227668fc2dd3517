"""Poolings over time that respect utterance lengths: padded frames never change the result.

- `masked_mean` / `MeanPooling`: the mean of the valid frames (KS, SID, ER, IC heads).
- `StatisticsPooling`: mean and standard deviation of the valid frames, concatenated (x-vector).
- `AttentiveStatisticsPooling`: the same statistics weighted by a learned per-frame attention
  (Okabe et al., 2018), padded frames given zero weight.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechrep.errors import SpeechrepError


def _valid_mask(features: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, 1) float mask of valid frames; every utterance needs at least one."""
    if features.dim() != 3 or lengths.shape != features.shape[:1]:
        raise SpeechrepError(
            "pooling: expected features (B, T, H) and lengths (B,), "
            f"got {tuple(features.shape)}, {tuple(lengths.shape)}"
        )
    if (lengths < 1).any():
        raise SpeechrepError("pooling: an utterance has no frames")
    positions = torch.arange(features.shape[1], device=features.device)
    return (positions[None, :] < lengths.to(features.device)[:, None]).unsqueeze(-1).to(features.dtype)


def masked_mean(features: Tensor, lengths: Tensor) -> Tensor:
    """(B, H) mean of the first `lengths[b]` frames of (B, T, H) features."""
    mask = _valid_mask(features, lengths)
    return (features * mask).sum(dim=1) / mask.sum(dim=1)


def _weighted_statistics(features: Tensor, weights: Tensor, eps: float) -> Tensor:
    """(B, 2H) weighted mean and standard deviation; weights (B, T, 1) sum to 1 over T."""
    mean = (features * weights).sum(dim=1)
    variance = (features.pow(2) * weights).sum(dim=1) - mean.pow(2)
    return torch.cat([mean, variance.clamp(min=eps).sqrt()], dim=-1)


class MeanPooling(nn.Module):
    """Mean over valid frames: (B, T, H), (B,) → (B, H)."""

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return masked_mean(features, lengths)


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over valid frames: (B, T, H), (B,) → (B, 2H)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        mask = _valid_mask(features, lengths)
        return _weighted_statistics(features, mask / mask.sum(dim=1, keepdim=True), self.eps)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation: (B, T, H), (B,) → (B, 2H)."""

    def __init__(self, input_size: int, attention_size: int = 128, eps: float = 1e-5):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(input_size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1)
        )
        self.eps = eps

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        mask = _valid_mask(features, lengths)
        logits = self.attention(features).masked_fill(mask == 0, float("-inf"))
        return _weighted_statistics(features, logits.softmax(dim=1), self.eps)

"""Time-span masking for masked pre-training (wav2vec 2.0 / HuBERT style), vectorised and seeded."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_span_mask(
    lengths: Tensor,
    max_len: int,
    mask_prob: float,
    span_length: int,
    min_spans: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, max_len) bool mask of random time spans over each utterance's valid frames.

    Each utterance of length L gets floor(mask_prob * L / span_length + u), u ~ U[0, 1), span starts (at least
    `min_spans`, at most what fits), drawn without replacement among the L - span_length + 1 possible starts;
    spans may overlap, so the masked fraction is close to but below `mask_prob` (as in fairseq)."""
    device = lengths.device
    batch = lengths.shape[0]
    if batch == 0 or max_len == 0 or mask_prob <= 0:
        return torch.zeros(batch, max_len, dtype=torch.bool, device=device)
    span_length = max(1, span_length)
    lengths = lengths.clamp(max=max_len)
    starts_possible = (lengths - span_length + 1).clamp(min=0)
    noise = torch.rand(batch, generator=generator, device=generator.device if generator else device).to(
        device
    )
    num_spans = torch.floor(mask_prob * lengths.float() / span_length + noise).long()
    num_spans = torch.maximum(num_spans, torch.full_like(num_spans, min_spans)).minimum(starts_possible)
    most = int(num_spans.max())
    if most == 0:
        return torch.zeros(batch, max_len, dtype=torch.bool, device=device)
    # a random score per candidate start; the top-k valid scores are a sample without replacement
    scores = torch.rand(batch, max_len, generator=generator, device=generator.device if generator else device)
    scores = scores.to(device)
    candidates = torch.arange(max_len, device=device)[None, :]
    scores = scores.masked_fill(candidates >= starts_possible[:, None], -1.0)
    starts = scores.topk(most, dim=1).indices  # (B, most)
    keep = torch.arange(most, device=device)[None, :] < num_spans[:, None]
    positions = (
        starts[:, :, None] + torch.arange(span_length, device=device)[None, None, :]
    )  # (B, most, span)
    positions = positions.masked_fill(~keep[:, :, None], max_len)  # unused spans write to a spill column
    mask = torch.zeros(batch, max_len + 1, dtype=torch.bool, device=device)
    mask.scatter_(1, positions.reshape(batch, -1), True)
    return mask[:, :max_len]

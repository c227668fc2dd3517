"""Sequence compression: frames grouped into segments, pooled into one vector each, and mapped back.

A segmentation of an utterance of T frames is a (T,) long tensor of segment ids, non-decreasing from 0 with
no gap (frame t belongs to segment ids[t]); a batch pads it with -1. Segments come from a fixed length
(`fixed_segment_ids`), from runs of repeated discrete units (`unit_segment_ids`) or from boundaries such as
a phone alignment (`boundary_segment_ids`); `fit_segment_count` merges or splits them to a target count, so
that variants compare at the same average frame rate (Meng et al., SLT 2022, "On compressing sequences for
self-supervised speech models").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def fixed_segment_ids(num_frames: int, factor: int) -> Tensor:
    """Consecutive groups of `factor` frames (the last one may be shorter)."""
    return torch.arange(num_frames) // max(1, factor)


def unit_segment_ids(units: Tensor) -> Tensor:
    """One segment per run of repeated units (the deduplicated unit sequence): (T,) units → (T,) ids."""
    if units.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    changes = torch.ones_like(units, dtype=torch.long)
    changes[1:] = (units[1:] != units[:-1]).long()
    return changes.cumsum(0) - 1


def boundary_segment_ids(starts: Sequence[int], num_frames: int) -> Tensor:
    """Segments starting at the given frames (e.g. phone onsets); frames before the first start join it."""
    marks = torch.zeros(num_frames, dtype=torch.long)
    for start in starts:
        if 0 < start < num_frames:
            marks[int(start)] = 1
    return marks.cumsum(0)


def fit_segment_count(ids: Tensor, target: int) -> Tensor:
    """Merge the shortest segment into its shorter neighbour, or split the longest in two, until there are
    `target` segments (at least 1, at most one per frame); ties go to the earliest segment."""
    sizes = torch.bincount(ids).tolist() if ids.numel() else []
    target = max(1, min(int(target), len(ids)))
    while sizes and len(sizes) > target:
        i = min(range(len(sizes)), key=sizes.__getitem__)
        if i == 0:
            j = 1
        elif i == len(sizes) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        low = min(i, j)
        sizes[low:low + 2] = [sizes[i] + sizes[j]]
    while len(sizes) < target:
        i = max(range(len(sizes)), key=sizes.__getitem__)
        half = sizes[i] // 2
        sizes[i:i + 1] = [sizes[i] - half, half]
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))


def pad_segment_ids(per_utterance: Sequence[Tensor], max_frames: int) -> tuple[Tensor, Tensor]:
    """(B, max_frames) ids padded with -1, and (B,) segment counts."""
    ids = torch.full((len(per_utterance), max_frames), -1, dtype=torch.long)
    counts = torch.zeros(len(per_utterance), dtype=torch.long)
    for row, seg in enumerate(per_utterance):
        ids[row, : len(seg)] = seg
        counts[row] = int(seg[-1]) + 1 if len(seg) else 0
    return ids, counts


def segment_means(x: Tensor, ids: Tensor, counts: Tensor) -> Tensor:
    """(B, T, H) frames → (B, max(counts), H) means of each segment; padding segments are zero."""
    batch, _, hidden = x.shape
    width = int(counts.max()) if counts.numel() else 0
    valid = ids >= 0
    index = ids.clamp(min=0).to(x.device)
    sums = x.new_zeros(batch, width, hidden)
    weights = valid.to(x.dtype).to(x.device)
    sums.scatter_add_(1, index[..., None].expand(-1, -1, hidden), x * weights[..., None])
    sizes = x.new_zeros(batch, width).scatter_add_(1, index, weights)
    return sums / sizes.clamp(min=1)[..., None]


def expand_segments(y: Tensor, ids: Tensor) -> Tensor:
    """(B, S, H) segment vectors → (B, T, H): each frame gets its segment's vector (padding frames: zero)."""
    index = ids.clamp(min=0).to(y.device)
    out = torch.gather(y, 1, index[..., None].expand(-1, -1, y.shape[-1]))
    return out * (ids >= 0).to(y.device)[..., None].to(y.dtype)


def segment_majority(labels: Tensor, ids: Tensor, counts: Tensor, num_classes: int, ignore: int) -> Tensor:
    """(B, T) frame labels → (B, S) the most frequent label of each segment (ties: the smallest label);
    frames labelled `ignore` do not vote; a segment without a vote gets `ignore`."""
    batch = labels.shape[0]
    width = int(counts.max()) if counts.numel() else 0
    voting = (ids >= 0) & (labels != ignore)
    slot = ids.clamp(min=0) * num_classes + labels.clamp(min=0, max=num_classes - 1)
    votes = torch.zeros(batch, width * num_classes, device=labels.device)
    votes.scatter_add_(1, slot.to(labels.device), voting.float().to(labels.device))
    votes = votes.view(batch, width, num_classes)
    best = votes.argmax(-1)
    return torch.where(votes.sum(-1) > 0, best, torch.full_like(best, ignore))


def segment_frame_spans(ids: Tensor, counts: Tensor) -> Tensor:
    """(B, T) ids → (B, S, 2) first frame and one past the last frame of each segment (padding: 0, 0)."""
    batch, frames = ids.shape
    width = int(counts.max()) if counts.numel() else 0
    spans = torch.zeros(batch, width, 2, dtype=torch.long)
    position = torch.arange(frames).expand(batch, -1)
    valid = ids >= 0
    index = ids.clamp(min=0).cpu()
    big = torch.full((batch, width), frames, dtype=torch.long)
    starts = big.scatter_reduce(1, index, torch.where(valid.cpu(), position, frames), "amin")
    ends = torch.zeros(batch, width, dtype=torch.long).scatter_reduce(
        1, index, torch.where(valid.cpu(), position + 1, 0), "amax"
    )
    used = torch.arange(width)[None, :] < counts.cpu()[:, None]
    spans[..., 0] = torch.where(used, starts, 0)
    spans[..., 1] = torch.where(used, ends, 0)
    return spans


def frames_at_times(frame_times: Tensor, lengths: Tensor, centres: Tensor) -> Tensor:
    """For each time in `centres` (B, N) seconds, the output frame whose [start, end) `frame_times`
    (B, S, 2) holds it (times before the first or after the last frame go to that frame)."""
    index = torch.zeros(centres.shape, dtype=torch.long, device=centres.device)
    for row in range(len(lengths)):
        n = int(lengths[row])
        if n == 0:
            continue
        starts = frame_times[row, :n, 0].to(centres.device, centres.dtype).contiguous()
        found = torch.searchsorted(starts, centres[row].contiguous(), right=True) - 1
        index[row] = found.clamp(0, n - 1)
    return index

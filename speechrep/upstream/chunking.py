"""Bounded-memory extraction of long audio: run an upstream on overlapping windows and stitch the frames.

A window of `chunk_seconds` is run alone; of its frames only a central *core* is kept, so every kept frame
(except at the true start and end of the file) sees at least `overlap_seconds` of real audio on each side.
Windows start on multiples of the upstream's stride, so a window's frame i is exactly the full pass's frame
`start / stride + i` (same samples under its receptive field); the cores tile the full pass's frames with no
gap and no duplicate, and the stitched output has exactly as many frames as the full pass.

The trade-off. Memory and time of one window are bounded by `chunk_seconds` (self-attention is quadratic in
length), and the stitched features take O(frames × layers × width). What is lost is context beyond a window:
- frame-local front ends (conv encoder with layer norm, Kaldi fbank without CMVN) equal a full pass;
- anything with utterance-wide statistics differs: group norm over time in the first conv of "base"
  wav2vec 2.0/HuBERT/WavLM, waveform normalisation of "large" models, per-utterance CMVN of the fbank/log-mel
  families;
- self-attention sees only its window: the deeper the layer, the further context matters, so a longer
  overlap and longer windows bring the chunked features closer to the full pass.
docs/benchmarks.md reports the measured difference for a Base-size model on a medium-length file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.upstream.base import FrameGeometry, UpstreamOutput

__all__ = ["ChunkPlan", "FrameGeometry", "chunked_forward", "frame_geometry", "iter_chunks", "plan_chunks"]


def frame_geometry(upstream: nn.Module) -> FrameGeometry:
    """The frame geometry `upstream` declares (`upstream.frame_geometry`)."""
    geometry = getattr(upstream, "frame_geometry", None)
    if not isinstance(geometry, FrameGeometry):
        raise ConfigError(f"{type(upstream).__name__}: declares no frame_geometry (stride, receptive field)")
    return geometry


@dataclass(frozen=True)
class ChunkPlan:
    """Window and kept-core sizes in frames of the upstream, derived from seconds."""

    window_frames: int
    overlap_frames: int
    geometry: FrameGeometry

    @property
    def core_frames(self) -> int:
        """Frames kept from a window that is neither the first nor the last."""
        return self.window_frames - 2 * self.overlap_frames

    @property
    def window_samples(self) -> int:
        """Input samples of one full window (yields exactly `window_frames` frames)."""
        return (self.window_frames - 1) * self.geometry.stride + self.geometry.receptive_field


def plan_chunks(
    upstream: nn.Module, chunk_seconds: float, overlap_seconds: float, sample_rate: int = 16000
) -> ChunkPlan:
    """Convert window/overlap seconds into whole frames of `upstream`; the kept core must be positive."""
    geometry = frame_geometry(upstream)
    window = int(chunk_seconds * sample_rate) // geometry.stride
    overlap = math.ceil(overlap_seconds * sample_rate / geometry.stride)
    if overlap < 0 or window - 2 * overlap < 1:
        raise ConfigError(
            f"chunking: chunk_seconds={chunk_seconds} must exceed twice overlap_seconds={overlap_seconds}"
        )
    return ChunkPlan(window, overlap, geometry)


def iter_chunks(
    upstream: nn.Module,
    wav: Tensor,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 5.0,
    layers: Sequence[int] | None = None,
) -> Iterator[tuple[int, list[Tensor]]]:
    """Yield (first global frame, kept frames (T_core, H) of each selected layer) window by window."""
    if wav.dim() != 1:
        raise ConfigError(f"chunking: expected one waveform (T,), got shape {tuple(wav.shape)}")
    plan = plan_chunks(upstream, chunk_seconds, overlap_seconds, int(getattr(upstream, "sample_rate", 16000)))
    stride, total = plan.geometry.stride, wav.shape[0]
    window_start = 0  # in frames
    while True:
        begin = window_start * stride
        end = min(total, begin + plan.window_samples)
        is_first, is_last = window_start == 0, end >= total
        piece = wav[begin:end][None]
        output: UpstreamOutput = upstream(piece, torch.tensor([end - begin], device=wav.device))
        if output.frame_times is not None:
            raise ConfigError(f"{type(upstream).__name__} compresses the sequence into segments, which would "
                              "not line up across windows: run it on whole utterances (no chunking)")
        frames = int(output.lengths[0])
        keep_from = 0 if is_first else plan.overlap_frames
        keep_to = frames if is_last else plan.overlap_frames + plan.core_frames
        selected = output.hidden_states if layers is None else [output.hidden_states[k] for k in layers]
        yield window_start + keep_from, [hidden[0, keep_from:keep_to] for hidden in selected]
        if is_last:
            return
        window_start += plan.core_frames


def chunked_forward(
    upstream: nn.Module,
    wav: Tensor,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 5.0,
    layers: Sequence[int] | None = None,
) -> UpstreamOutput:
    """Hidden states (1, T', H) of one long waveform (T,) computed window by window (see module docstring).

    `layers` selects hidden states (default all). Kept frames are copied into outputs allocated once, so peak
    memory is one window's activations plus the features themselves (no pieces, no final concatenation).
    """
    stride = frame_geometry(upstream).stride
    capacity = wav.shape[0] // stride + 1  # no front end makes more frames than stride steps (+1)
    outputs: list[Tensor] = []
    filled = 0
    for start, kept in iter_chunks(upstream, wav, chunk_seconds, overlap_seconds, layers):
        if not outputs:  # dtype and device of the first window (e.g. bf16 under autocast)
            outputs = [torch.empty(capacity, h.shape[-1], dtype=h.dtype, device=h.device) for h in kept]
        filled = start + kept[0].shape[0]
        if filled > capacity:
            raise RuntimeError(f"{type(upstream).__name__} made more than {capacity} frames from "
                               f"{wav.shape[0]} samples at stride {stride}")
        for out, hidden in zip(outputs, kept):
            out[start:filled] = hidden
    lengths = torch.tensor([filled], device=wav.device)
    return UpstreamOutput(hidden_states=[out[None, :filled] for out in outputs], lengths=lengths)

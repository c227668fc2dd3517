"""The Upstream contract shared by every model family, baseline and checkpoint converter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from speechrep.nn.frames import padding_mask
from speechrep.nn.segments import frames_at_times

__all__ = ["FrameGeometry", "Upstream", "UpstreamOutput", "on_frame_grid", "padding_mask"]  # padding_mask: nn


@dataclass(frozen=True)
class FrameGeometry:
    """Frame j depends on input samples [j·stride − offset, j·stride − offset + receptive_field).

    Every upstream declares its own (`upstream.frame_geometry`, computed from its config); chunked extraction,
    HEAR timestamps and the feature store read it."""

    receptive_field: int  # input samples that one output frame depends on (before any self-attention/RNN)
    stride: int  # input samples between consecutive output frames
    offset: int = 0  # left zero-padding of the front end, in input samples
    end_padding: int = 0  # samples the front end adds at the end (zero-filled last stack, right conv padding)
    # False when the front end also uses utterance-wide statistics (group norm over time, per-utterance CMVN,
    # waveform normalisation, deltas): then a frame depends on samples outside its receptive field too
    frame_local: bool = True

    def centre_samples(self, num_frames: int) -> Tensor:
        """(num_frames,) float64 sample position of the centre of each frame's receptive field."""
        starts = torch.arange(num_frames, dtype=torch.float64) * self.stride - self.offset
        return starts + self.receptive_field / 2

    @property
    def min_samples(self) -> int:
        """The fewest input samples that make one frame."""
        return max(1, self.receptive_field - self.offset - self.end_padding)

    def num_frames(self, samples: int) -> int:
        """Frames made from `samples` input samples: those whose field fits in the padded input."""
        padded = samples + self.offset + self.end_padding
        return max(0, (padded - self.receptive_field) // self.stride + 1)


@dataclass
class UpstreamOutput:
    """Every layer's hidden states, (B, T', H) each; index 0 is the input to the first context layer."""

    hidden_states: list[Tensor]
    lengths: Tensor  # (B,) valid frames per utterance, the same for every layer
    # on request (`output_attentions=True`, transformer families): (B, H, T', T') probabilities per layer
    attentions: list[Tensor] | None = None
    # sequence-compressed upstreams: (B, T', 2) start and end (seconds) of the audio each frame summarises;
    # None: frame j lies on the uniform grid of `frame_geometry`
    frame_times: Tensor | None = None


def on_frame_grid(
    output: UpstreamOutput, wav_lens: Tensor, geometry: FrameGeometry, sample_rate: int = 16000
) -> tuple[list[Tensor], Tensor]:
    """The hidden states on the uniform grid of `geometry`: a compressed frame is repeated for every grid
    frame whose centre lies in its time span (frame tasks label that grid); other outputs pass unchanged."""
    if output.frame_times is None:
        return output.hidden_states, output.lengths
    lengths = torch.tensor([geometry.num_frames(int(n)) for n in wav_lens.tolist()], dtype=torch.long)
    width = int(lengths.max()) if lengths.numel() else 0
    centres = (torch.arange(width, dtype=torch.float64) + 0.5) * geometry.stride / sample_rate
    device = output.hidden_states[0].device
    index = frames_at_times(output.frame_times, output.lengths, centres.expand(len(lengths), -1).to(device))
    valid = padding_mask(lengths.to(device), width)[..., None]
    states = [torch.gather(h, 1, index[..., None].expand(-1, -1, h.shape[-1])) * valid.to(h.dtype)
              for h in output.hidden_states]
    return states, lengths.to(output.lengths.device)


@runtime_checkable
class Upstream(Protocol):
    """A module mapping padded 16 kHz waveforms to the hidden states of all its layers."""

    sample_rate: int  # 16000
    stride: int  # input samples per output frame, e.g. 160 or 320
    hidden_sizes: list[int]  # one per returned hidden state
    frame_geometry: FrameGeometry  # stride, receptive field and offset of the output frames

    def __call__(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput: ...

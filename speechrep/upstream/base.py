"""The Upstream contract shared by every model family, baseline and checkpoint converter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from speechrep.nn.frames import padding_mask

__all__ = ["Upstream", "UpstreamOutput", "padding_mask"]  # padding_mask lives in nn; re-exported for callers


@dataclass
class UpstreamOutput:
    """Every layer's hidden states, (B, T', H) each; index 0 is the input to the first context layer."""

    hidden_states: list[Tensor]
    lengths: Tensor  # (B,) valid frames per utterance, the same for every layer


@runtime_checkable
class Upstream(Protocol):
    """A module mapping padded 16 kHz waveforms to the hidden states of all its layers."""

    sample_rate: int  # 16000
    stride: int  # input samples per output frame, e.g. 160 or 320
    hidden_sizes: list[int]  # one per returned hidden state

    def __call__(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput: ...

"""`houlsby`, `houlsby_parallel` and `adapterbias`: small modules added at each transformer layer's FFN.

Each wraps the FFN of every transformer layer (the `FeedForward` of `speechrep.nn.transformer`, or the `ffn` of
a Mockingjay/TERA/AudioALBERT layer), with no edit to the transformer:
- `houlsby` (Houlsby et al. 2019, as in the JSALT 2022 study): after the FFN, a bottleneck MLP with a residual,
  `ffn(x) + up(gelu(down(ffn(x))))`, down to `bottleneck` (32) units;
- `houlsby_parallel` (He et al. 2022): the adapter reads the FFN's input instead, `ffn(x) + up(gelu(down(x)))`;
- `adapterbias` (Fu et al. 2022): a token-dependent shift of the FFN's output, `ffn(x) + α(ffn(x))·v`, with a
  learned vector v (H) and a per-frame scalar α from a Linear(H→1).
The last projection (up, or v) starts at zero, so a prepared model computes exactly what the frozen one does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.tuning.inserted import InsertingStrategy, wrap_feed_forwards


class Bottleneck(nn.Module):
    """down (H→b) → GELU → up (b→H), up initialised to zero."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, H) → (B, T, H)."""
        return self.up(F.gelu(self.down(x)))


class AdapterFFN(nn.Module):
    """A frozen FFN (`ffn`) plus a Houlsby adapter, sequential (after it) or parallel (beside it)."""

    def __init__(self, ffn: nn.Module, dim: int, bottleneck: int, parallel: bool):
        super().__init__()
        self.ffn = ffn
        self.parallel = parallel
        self.adapter = Bottleneck(dim, bottleneck)

    def forward(self, x: Tensor) -> Tensor:
        """The FFN's output plus the adapter's."""
        out = self.ffn(x)
        return out + self.adapter(x if self.parallel else out)


class AdapterBiasFFN(nn.Module):
    """A frozen FFN (`ffn`) whose output is shifted by α(out)·v (AdapterBias)."""

    def __init__(self, ffn: nn.Module, dim: int):
        super().__init__()
        self.ffn = ffn
        self.alpha = nn.Linear(dim, 1)
        self.vector = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """The FFN's output plus a per-frame multiple of the learned vector."""
        out = self.ffn(x)
        return out + self.alpha(out) * self.vector


@dataclass(frozen=True)
class AdapterOptions:
    """Houlsby adapter options: the bottleneck width."""

    bottleneck: int = 32


@dataclass(frozen=True)
class AdapterBiasOptions:
    """AdapterBias has no options (kept for the `name:key=value` syntax all strategies share)."""


class Houlsby(InsertingStrategy):
    """A bottleneck adapter at every transformer FFN; `parallel` reads the FFN's input instead of its output."""

    def __init__(self, options: AdapterOptions | None = None, parallel: bool = False):
        self.options = options or AdapterOptions()
        self.parallel = parallel
        self.name = "houlsby_parallel" if parallel else "houlsby"

    def insert(self, upstream: nn.Module) -> None:
        """Wrap every transformer FFN with an adapter."""
        wrap_feed_forwards(upstream, lambda ffn, dim: AdapterFFN(ffn, dim, self.options.bottleneck, self.parallel))


class AdapterBias(InsertingStrategy):
    """A token-dependent shift after every transformer FFN."""

    name = "adapterbias"

    def __init__(self, options: AdapterBiasOptions | None = None):
        self.options = options or AdapterBiasOptions()

    def insert(self, upstream: nn.Module) -> None:
        """Wrap every transformer FFN with an AdapterBias shift."""
        wrap_feed_forwards(upstream, AdapterBiasFFN)

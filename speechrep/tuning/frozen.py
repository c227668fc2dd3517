"""`frozen`: the upstream never changes (SUPERB's protocol); only the layer weights and the head train."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from speechrep.tuning.base import ParamGroup
from speechrep.upstream.base import FrameGeometry, UpstreamOutput


class _Holder:
    """A plain object, so the upstream it holds is not a submodule: not trained, not checkpointed."""

    def __init__(self, upstream: nn.Module):
        self.upstream = upstream


class FrozenUpstream(nn.Module):
    """An upstream kept out of the module tree: no parameters, no state, always in eval mode, no gradients.

    `.to()`/`.cuda()` still move it, and `forward` runs it without building a graph (the layer weights'
    backward needs only its outputs).
    """

    def __init__(self, upstream: nn.Module):
        super().__init__()
        self._held = _Holder(upstream.eval().requires_grad_(False))
        self.hidden_sizes = list(upstream.hidden_sizes)
        self.stride = int(upstream.stride)
        self.sample_rate = int(getattr(upstream, "sample_rate", 16000))

    @property
    def upstream(self) -> nn.Module:
        """The frozen upstream itself."""
        return self._held.upstream

    @property
    def frame_geometry(self) -> FrameGeometry:
        """The held upstream's declared frame geometry (the Upstream contract passes through)."""
        return self._held.upstream.frame_geometry

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # The held upstream is deliberately not a submodule, so move it here.
        self.upstream._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor, **kwargs: Any) -> UpstreamOutput:
        """The upstream's output, computed without gradients (and in eval mode, whatever the caller's mode);
        `kwargs` (e.g. a compressed upstream's `boundaries`) pass through."""
        with torch.no_grad():
            return self.upstream(wavs, wav_lens, **kwargs)


class Frozen:
    """Freeze the upstream: its features can be cached and a checkpoint saves nothing of it."""

    name = "frozen"
    caches_features = True

    def prepare(self, upstream: nn.Module) -> nn.Module:
        """The upstream, frozen and held out of the module tree."""
        return FrozenUpstream(upstream)

    def parameter_groups(self, prepared: nn.Module, cfg: Any) -> list[ParamGroup]:
        """Nothing of a frozen upstream trains."""
        return []

    def checkpoint_keys(self, prepared: nn.Module) -> list[str]:
        """Nothing of a frozen upstream is saved."""
        return []

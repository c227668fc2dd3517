"""Featurizer: a learnable softmax-weighted sum of an upstream's layers (SUPERB's weighted-sum protocol)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError


class Featurizer(nn.Module):
    """Combines the hidden states of `upstream` into one (B, T', H) feature sequence.

    `layers=None` learns a softmax weight over every layer (initialised equal); `layers=[k, ...]` restricts
    the sum to those layers (one layer: that layer as is). `normalize=True` applies a layer norm without
    affine parameters to each layer before weighting (as S3PRL). The upstream is frozen (no gradients, eval
    mode) unless `finetune_upstream=True`. `forward(wavs, wav_lens)` runs the upstream;
    `combine(hidden_states, lengths)` works on precomputed hidden states (the downstream feature cache).
    """

    def __init__(self, upstream: nn.Module, layers: Sequence[int] | None = None, normalize: bool = False,
                 finetune_upstream: bool = False):
        super().__init__()
        sizes = list(upstream.hidden_sizes)
        self.layers = self._check_layers(layers, len(sizes))
        chosen = {sizes[i] for i in self.layers}
        if len(chosen) != 1:
            raise ConfigError(f"Featurizer: layers {self.layers} have different sizes {sorted(chosen)}; "
                              "select layers of one size with layers=[...]")
        self.output_size = chosen.pop()
        self.normalize = normalize
        self.finetune_upstream = finetune_upstream
        self.upstream = upstream
        if not finetune_upstream:
            upstream.requires_grad_(False)
        self.weights = nn.Parameter(torch.zeros(len(self.layers))) if len(self.layers) > 1 else None

    @staticmethod
    def _check_layers(layers: Sequence[int] | None, count: int) -> list[int]:
        """Validated absolute layer indices (negative indices count from the end)."""
        if layers is None:
            return list(range(count))
        if not layers:
            raise ConfigError("Featurizer: layers is empty; pass None for all layers or a list of indices")
        bad = [k for k in layers if not -count <= k < count]
        if bad:
            raise ConfigError(f"Featurizer: layers {bad} out of range for an upstream with {count} hidden "
                              "states")
        resolved = [k % count for k in layers]
        if len(set(resolved)) != len(resolved):
            raise ConfigError(f"Featurizer: layers {list(layers)} repeat a layer")
        return resolved

    def train(self, mode: bool = True) -> Featurizer:
        """Set training mode; a frozen upstream stays in eval mode (no dropout, deterministic quantizers)."""
        super().train(mode)
        if not self.finetune_upstream:
            self.upstream.eval()
        return self

    def layer_weights(self) -> Tensor:
        """The softmax weight of each selected layer, (len(layers),), detached (for reports)."""
        if self.weights is None:
            return torch.ones(1)
        return self.weights.detach().softmax(-1)

    def combine(self, hidden_states: Sequence[Tensor], lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted sum of precomputed hidden states (every layer, in order) → (features, lengths)."""
        if len(hidden_states) != len(self.upstream.hidden_sizes):
            raise ConfigError(f"Featurizer: got {len(hidden_states)} hidden states, the upstream has "
                              f"{len(self.upstream.hidden_sizes)}")
        picked = [hidden_states[i] for i in self.layers]
        if self.normalize:
            picked = [F.layer_norm(h, h.shape[-1:]) for h in picked]
        if self.weights is None:
            return picked[0], lengths
        stacked = torch.stack(picked, dim=0)  # (L, B, T', H)
        weights = self.weights.softmax(-1).to(stacked.dtype)
        return torch.einsum("l,lbth->bth", weights, stacked), lengths

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Run the upstream on padded waveforms and combine its layers → (features (B, T', H), lengths)."""
        # no_grad rather than inference_mode: the layer weights' backward must save these hidden states
        with torch.set_grad_enabled(self.finetune_upstream and torch.is_grad_enabled()):
            out = self.upstream(wavs, wav_lens)
        return self.combine(out.hidden_states, out.lengths)

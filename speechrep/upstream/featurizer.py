"""Featurizer: a learnable softmax-weighted sum of an upstream's layers (SUPERB's weighted-sum protocol)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError


class Featurizer(nn.Module):
    """Combines hidden states (one (B, T', H) tensor per layer) into one (B, T', H) feature sequence.

    Built from the upstream's `hidden_sizes`; it holds no upstream (how an upstream is frozen or trained is a
    tuning strategy's job, `speechrep.tuning`). `layers=None` learns a softmax weight over every layer
    (initialised equal); `layers=[k, ...]` restricts the sum to those layers (one layer: that layer as is).
    When the hidden states differ in size (e.g. BYOL-A's convolution blocks, then its embedding), `layers=None`
    sums the layers of the last one's size and reports a weight of 0 for the others.
    `normalize=True` applies a layer norm without affine parameters to each layer before weighting (as S3PRL).
    `forward(hidden_states, lengths)` combines; `featurize(upstream, wavs, wav_lens)` runs an upstream first.
    """

    def __init__(self, hidden_sizes: Sequence[int], layers: Sequence[int] | None = None,
                 normalize: bool = False):
        super().__init__()
        sizes = [int(h) for h in hidden_sizes]
        self.hidden_sizes = sizes
        self.layers = self._check_layers(layers, len(sizes))
        self.padded_weights = layers is None and len(set(sizes)) > 1
        if self.padded_weights:
            self.layers = [i for i, size in enumerate(sizes) if size == sizes[-1]]
        chosen = {sizes[i] for i in self.layers}
        if len(chosen) != 1:
            raise ConfigError(f"Featurizer: layers {self.layers} have different sizes {sorted(chosen)}; "
                              "select layers of one size with layers=[...]")
        self.output_size = chosen.pop()
        self.normalize = normalize
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

    def layer_weights(self) -> Tensor:
        """The softmax weight of each selected layer, (len(layers),), detached (for reports); every hidden
        state's, 0 where not summed, when the layers were chosen by size."""
        weights = torch.ones(1) if self.weights is None else self.weights.detach().softmax(-1)
        if not self.padded_weights:
            return weights
        full = torch.zeros(len(self.hidden_sizes))
        full[self.layers] = weights
        return full

    def combine(self, hidden_states: Sequence[Tensor], lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted sum of hidden states (every layer, in order) → (features, lengths)."""
        if len(hidden_states) != len(self.hidden_sizes):
            raise ConfigError(f"Featurizer: got {len(hidden_states)} hidden states, the upstream has "
                              f"{len(self.hidden_sizes)}")
        picked = [hidden_states[i] for i in self.layers]
        if self.normalize:
            picked = [F.layer_norm(h, h.shape[-1:]) for h in picked]
        if self.weights is None:
            return picked[0], lengths
        stacked = torch.stack(picked, dim=0)  # (L, B, T', H)
        weights = self.weights.softmax(-1).to(stacked.dtype)
        return torch.einsum("l,lbth->bth", weights, stacked), lengths

    def forward(self, hidden_states: Sequence[Tensor], lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted sum of hidden states → (features (B, T', H), lengths); the same as `combine`."""
        return self.combine(hidden_states, lengths)

    def featurize(self, upstream: nn.Module, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Run `upstream` on padded waveforms and combine its layers → (features, lengths).

        Gradients reach the upstream exactly when its parameters require them: pass a prepared upstream
        (`speechrep.tuning.get_tuning(name).prepare(upstream)`) to choose.
        """
        out = upstream(wavs, wav_lens)
        return self.combine(out.hidden_states, out.lengths)

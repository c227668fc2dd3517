"""`bitfit`: only the upstream's bias terms train (Ben Zaken et al. 2022).

Every `*.bias` parameter of the upstream trains: the transformer's Linear and LayerNorm biases, and those
outside it that exist (the positional convolution, the feature projection, the encoder's layer norm, the
feature extractor's group/layer norms). Modules without a bias stay frozen without one: the wav2vec 2.0 family's
feature-extractor convolutions (`conv_bias=False`); MelHuBERT has no bias-less module. The issue asks for zero biases where a
transformer Linear or LayerNorm lacks one; every one here has a bias (`nn.Linear` and `nn.LayerNorm` defaults;
the non-affine norms of the positional conv stack have no parameters at all), so none is added.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from speechrep.tuning.inserted import InsertingStrategy


@dataclass(frozen=True)
class BitFitOptions:
    """BitFit has no options (kept for the `name:key=value` syntax all strategies share)."""


class BitFit(InsertingStrategy):
    """Train the upstream's biases only."""

    name = "bitfit"

    def __init__(self, options: BitFitOptions | None = None):
        self.options = options or BitFitOptions()

    def insert(self, upstream: nn.Module) -> None:
        """Unfreeze every bias parameter."""
        for name, parameter in upstream.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                parameter.requires_grad_(True)

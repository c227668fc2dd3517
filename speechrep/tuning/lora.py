"""`lora`: low-rank updates of chosen Linear projections (Hu et al. 2022): W x + (alpha/rank)·B A x.

By default rank 8 and alpha 16 on each `SelfAttention`'s `q_proj` and `v_proj` (in the Mockingjay family's fused
`qkv` projection, on its query and value rows, with one A and B per target); A is drawn as nn.Linear's
Kaiming-uniform init, B starts at zero, so a prepared model computes exactly what the frozen one does.
`merge(prepared)` folds the update into the weights (`unmerge` takes it out again); `merged_upstream(prepared)`
returns a plain copy of the upstream, its LoRA layers replaced by ordinary Linear layers with the merged
weights, which `export_upstream` writes and `load_upstream` reads like any other upstream.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.transformer import SelfAttention
from speechrep.tuning.inserted import InsertingStrategy, TunedUpstream, replace_modules
from speechrep.upstream.mockingjay import _PostLNLayer  # the Mockingjay family's BERT layer: fused qkv, then out


class LoRALinear(nn.Module):
    """A frozen Linear (`base`) plus a trained low-rank update; `merged` = the update is in `base.weight`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as peft does
        self.merged = False

    def delta(self) -> Tensor:
        """The update of the weight, (alpha/rank)·B A."""
        return (self.lora_b @ self.lora_a) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        """W x + b (+ the low-rank term unless merged)."""
        out = self.base(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


class FusedLoRALinear(LoRALinear):
    """A frozen fused projection (e.g. qkv) whose chosen equal-sized row blocks each get their own A and B."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, blocks: int, chosen: tuple[int, ...]):
        nn.Module.__init__(self)
        self.base = base
        self.scale = alpha / rank
        self.width = base.out_features // blocks
        self.chosen = chosen
        self.lora_a = nn.Parameter(torch.empty(len(chosen), rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(len(chosen), self.width, rank))
        for a in self.lora_a:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.merged = False

    def delta(self) -> Tensor:
        """The update of the whole fused weight: (alpha/rank)·B_i A_i in the chosen blocks, zero elsewhere."""
        delta = self.base.weight.new_zeros(self.base.weight.shape)
        for index, block in enumerate(self.chosen):
            delta[block * self.width:(block + 1) * self.width] = self.lora_b[index] @ self.lora_a[index]
        return delta * self.scale

    def forward(self, x: Tensor) -> Tensor:
        """W x + b (+ the blockwise low-rank term unless merged); the small fused models afford the full delta."""
        out = self.base(x)
        return out if self.merged else out + F.linear(x, self.delta())


@dataclass(frozen=True)
class LoRAOptions:
    """LoRA options: the rank, alpha (the update is scaled by alpha/rank) and the projections it adapts."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


class LoRA(InsertingStrategy):
    """Low-rank updates of the attention projections named by `options.targets`."""

    name = "lora"

    def __init__(self, options: LoRAOptions | None = None):
        self.options = options or LoRAOptions()
        bad = sorted(set(self.options.targets) - set(_PROJECTIONS))
        if bad or not self.options.targets or self.options.rank < 1:
            raise ConfigError(f"--tuning lora: targets must be among {'/'.join(_PROJECTIONS)} and rank >= 1 "
                              f"(got targets={'/'.join(self.options.targets)}, rank={self.options.rank})")

    def insert(self, upstream: nn.Module) -> None:
        """Wrap the target projections of every SelfAttention (and of every Mockingjay-family layer)."""
        rank, alpha, targets = self.options.rank, self.options.alpha, self.options.targets
        for attention in [m for m in upstream.modules() if isinstance(m, SelfAttention)]:
            replace_modules(attention, nn.Linear, lambda linear: LoRALinear(linear, rank, alpha), names=targets)
        chosen = tuple(i for i, name in enumerate(("q_proj", "k_proj", "v_proj")) if name in targets)
        for layer in [m for m in upstream.modules() if isinstance(m, _PostLNLayer)]:
            if chosen:
                layer.qkv = FusedLoRALinear(layer.qkv, rank, alpha, 3, chosen)
            if "out_proj" in targets:
                layer.out = LoRALinear(layer.out, rank, alpha)


def _lora_layers(module: nn.Module) -> list[LoRALinear]:
    return [m for m in module.modules() if isinstance(m, LoRALinear)]


@torch.no_grad()
def merge(prepared: nn.Module) -> None:
    """Fold every LoRA update into its base weight (in place; the output stays the same up to rounding)."""
    for layer in _lora_layers(prepared):
        if not layer.merged:
            layer.base.weight += layer.delta()
            layer.merged = True


@torch.no_grad()
def unmerge(prepared: nn.Module) -> None:
    """Take every merged LoRA update out of its base weight again (so training can go on)."""
    for layer in _lora_layers(prepared):
        if layer.merged:
            layer.base.weight -= layer.delta()
            layer.merged = False


def merged_upstream(prepared: nn.Module) -> nn.Module:
    """A plain copy of the LoRA-tuned upstream (merged weights, ordinary Linear layers), ready to export."""
    upstream = copy.deepcopy(prepared.upstream if isinstance(prepared, TunedUpstream) else prepared)
    merge(upstream)
    replace_modules(upstream, LoRALinear, lambda layer: layer.base)
    return upstream.requires_grad_(True)

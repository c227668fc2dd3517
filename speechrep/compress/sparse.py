"""Unstructured weight pruning: global magnitude masks over the transformer's linear weights.

    masks = magnitude_masks(upstream, density=0.3)   # {parameter name: bool mask}, one global threshold
    apply_masks(upstream, masks)                      # zero the pruned weights in place
    sparsity_report(upstream, masks)                  # density, nonzero parameters, MACs if zeros were free

The prunable weights are the weight matrices of every `nn.Linear` inside the transformer layers (attention
projections and FFN); the front end (waveform CNN or filterbank projection), the positional convolution,
biases and layer norms stay dense, as in BERT and HuBERT weight-pruning studies. One threshold ranks all of
them together, so layers and matrices end up with different densities; ties at the threshold are broken by
position, so exactly round(density · prunable weights) survive.

A masked model is still dense: its exported weights hold zeros and every matrix product costs what it did.
`sparse_macs_per_second` is what the MACs would be if multiplications by a zero weight were free (each linear
layer runs on every frame, so the saving is frames × zeros); no dense CPU or GPU kernel realises it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from speechrep.compress.structured import transformer_encoder

Masks = dict[str, Tensor]


def prunable_weights(upstream: nn.Module) -> dict[str, Tensor]:
    """The weight matrices of the linear layers inside the transformer layers, by parameter name."""
    prefix, encoder = transformer_encoder(upstream)
    base = f"{prefix}.layers" if prefix else "layers"
    return {f"{base}.{name}.weight": module.weight
            for name, module in encoder.layers.named_modules() if isinstance(module, nn.Linear)}


def magnitude_masks(upstream: nn.Module, density: float) -> Masks:
    """Masks keeping the round(density · N) largest |w| of all N prunable weights (one global threshold)."""
    weights = prunable_weights(upstream)
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    count = round(density * flat.numel())
    kept = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    kept[torch.argsort(flat, descending=True, stable=True)[:count]] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = kept[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


@torch.no_grad()
def apply_masks(upstream: nn.Module, masks: Masks) -> None:
    """Zero every masked-out weight in place (after each optimizer step, pruned weights stay pruned)."""
    params = dict(upstream.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def masks_of(upstream: nn.Module) -> Masks:
    """The masks an already pruned model carries: its nonzero prunable weights."""
    return {name: w.detach() != 0 for name, w in prunable_weights(upstream).items()}


def mask_overlap(a: Masks, b: Masks) -> float:
    """Intersection over union of the kept weights of two mask sets over the same parameters."""
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    return both / either if either else 1.0


def sparsity_report(upstream: nn.Module, masks: Masks, params: int, macs_per_second: int,
                    frames_per_second: int) -> dict[str, Any]:
    """Density of the prunable weights, nonzero parameters and MACs per audio second if zeros cost nothing."""
    total = sum(m.numel() for m in masks.values())
    zeros = total - sum(int(m.sum()) for m in masks.values())
    return {"density": (total - zeros) / total, "prunable": total, "nonzero_params": params - zeros,
            "sparse_macs_per_second": macs_per_second - frames_per_second * zeros}

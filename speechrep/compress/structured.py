"""Structured pruning of attention heads and feed-forward units: one pruning step, by importance.

    smaller = prune_heads(upstream, keep=0.5)   # half of all heads, ranked globally across layers
    smaller = prune_ffn(upstream, keep=0.5)     # half of the FFN units of every layer
    smaller = prune_heads(upstream, 1.0, scores=gradient_scores, count=6)   # any ranking, an exact count

Both return a NEW upstream of the same family whose q/k/v/out or fc1/fc2 projections are physically smaller
(the kept rows and columns copied), with per-layer `num_heads` / `ffn_size` lists in its config, so
`export_upstream` writes it and `load_upstream` reads it back with its real shapes. Nothing is trained here:
`series.py` chains the steps and retrains between them (the `speechrep compress` command).

Importance measures:
- a head: the L1 norm of its rows of the q, k and v projections (weights and biases) plus its columns of
  out_proj's weight (out_proj's bias is shared by all heads and belongs to none). Heads are ranked globally
  across layers; a layer that keeps no head skips its attention block (and so loses out_proj's bias).
- an FFN unit j: (L1 norm of fc1's row j + |fc1 bias j|) × L1 norm of fc2's column j. Units are ranked within
  each layer and every layer keeps the same fraction (at least one unit), so no layer loses its block.

WavLM's relative position bias (one embedding column per head, shared by all layers) cannot hold per-layer
head counts: `prune_heads` refuses it with a ConfigError; `prune_ffn` works for it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from speechrep.compress.profile import count_macs, count_parameters
from speechrep.errors import ConfigError
from speechrep.nn.transformer import FeedForward, SelfAttention, TransformerEncoder

_SIZE_FIELDS = ("num_heads", "ffn_size", "head_dim")


def transformer_encoder(upstream: nn.Module) -> tuple[str, TransformerEncoder]:
    """The qualified name and module of the upstream's transformer; a ConfigError if it cannot be pruned."""
    config = getattr(upstream, "config", None)
    fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    found = [(name, m) for name, m in upstream.named_modules() if isinstance(m, TransformerEncoder)]
    if len(found) != 1 or not set(_SIZE_FIELDS) <= fields:
        raise ConfigError(f"{type(upstream).__name__} has no transformer layers with per-layer head counts "
                          "and FFN sizes in its config; structured pruning needs one (wav2vec2, HuBERT, "
                          "WavLM, data2vec, DistilHuBERT, MelHuBERT, BEST-RQ)")
    return found[0]


def check_prunable(upstream: nn.Module, method: str) -> tuple[str, TransformerEncoder]:
    """`transformer_encoder(upstream)`, or a ConfigError if `method` ("heads" or "ffn") cannot prune it."""
    if method not in PRUNERS:
        raise ConfigError(f"--method {method}: unknown; choose one of {', '.join(PRUNERS)}")
    prefix, encoder = transformer_encoder(upstream)
    if method == "heads" and encoder.rel_pos_buckets:
        raise ConfigError(f"{type(upstream).__name__}: head pruning is not supported with a relative "
                          "position bias shared by all layers (WavLM); prune the FFN instead")
    return prefix, encoder


def check_keep(keep: float) -> None:
    """ConfigError unless 0 < keep <= 1."""
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise ConfigError(f"keep {keep}: must be a fraction in (0, 1]")


def head_importance(attention: SelfAttention) -> Tensor:
    """(H,) L1 norm of each head's q/k/v rows (weights and biases) and out_proj weight columns."""
    heads, width = attention.num_heads, attention.head_dim
    total = attention.out_proj.weight.detach().abs().view(-1, heads, width).sum(dim=(0, 2))
    for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
        rows = proj.weight.detach().abs().sum(dim=1) + proj.bias.detach().abs()
        total = total + rows.view(heads, width).sum(dim=1)
    return total


def ffn_importance(ffn: FeedForward) -> Tensor:
    """(F,) per unit: (L1 of fc1's row + |fc1 bias|) × L1 of fc2's column."""
    fc1 = ffn.fc1.weight.detach().abs().sum(dim=1) + ffn.fc1.bias.detach().abs()
    return fc1 * ffn.fc2.weight.detach().abs().sum(dim=0)


def kept_heads(upstream: nn.Module, keep: float, scores: Sequence[Tensor] | None = None,
               count: int | None = None) -> list[list[int]]:
    """Per layer, the kept heads (sorted): the round(keep · all heads) (or `count`) most important, globally,
    by `scores` (one (H,) tensor per layer with attention; default: `head_importance`)."""
    check_keep(keep)
    _, encoder = transformer_encoder(upstream)
    blocks = [(layer, block) for layer, block in enumerate(encoder.layers) if block.attention is not None]
    if scores is None:
        scores = [head_importance(block.attention) for _, block in blocks]
    ranked = [(float(s), layer, head) for (layer, _), layer_scores in zip(blocks, scores)
              for head, s in enumerate(layer_scores)]
    count = max(1, round(keep * len(ranked))) if count is None else max(1, min(count, len(ranked)))
    chosen = sorted(ranked, key=lambda item: (-item[0], item[1], item[2]))[:count]
    return [sorted(h for _, layer, h in chosen if layer == index) for index in range(len(encoder.layers))]


def kept_units(upstream: nn.Module, keep: float, counts: Sequence[int] | None = None) -> list[list[int]]:
    """Per layer, the kept FFN units (sorted): the round(keep · F) (or `counts[layer]`) most important, at
    least one."""
    check_keep(keep)
    _, encoder = transformer_encoder(upstream)
    kept: list[list[int]] = []
    for index, block in enumerate(encoder.layers):
        if block.ffn is None:
            kept.append([])
            continue
        scores = ffn_importance(block.ffn)
        count = round(keep * scores.numel()) if counts is None else min(counts[index], scores.numel())
        kept.append(sorted(torch.argsort(scores, descending=True, stable=True)[:max(1, count)].tolist()))
    return kept


def rebuild_upstream(upstream: nn.Module, changes: dict[str, object], state: dict[str, Tensor]) -> nn.Module:
    """A new upstream of the same class with its config changed and `state` loaded (strictly); its throwaway
    initialisation leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        model = type(upstream)(dataclasses.replace(upstream.config, **changes))
    model.load_state_dict(state)
    return model.train(upstream.training)


def prune_heads(upstream: nn.Module, keep: float, scores: Sequence[Tensor] | None = None,
                count: int | None = None) -> nn.Module:
    """A new upstream keeping the fraction `keep` (or `count`) of all attention heads, ranked globally by
    `scores` (default: the L1 norm of their weights; module doc)."""
    prefix, encoder = check_prunable(upstream, "heads")
    heads = kept_heads(upstream, keep, scores, count)
    head_dim = next(b.attention.head_dim for b in encoder.layers if b.attention is not None)
    state = dict(upstream.state_dict())
    for index, (block, kept) in enumerate(zip(encoder.layers, heads)):
        base = f"{prefix}.layers.{index}.attention" if prefix else f"layers.{index}.attention"
        if block.attention is None:
            continue
        if not kept:
            for key in [k for k in state if k.startswith(base + ".")]:
                del state[key]
            if block.attention_norm is not None and encoder.layer_norm_first:
                for key in [k for k in state if k.startswith(f"{base}_norm.")]:
                    del state[key]
            continue
        rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in kept])
        for proj in ("q_proj", "k_proj", "v_proj"):
            state[f"{base}.{proj}.weight"] = state[f"{base}.{proj}.weight"][rows].clone()
            state[f"{base}.{proj}.bias"] = state[f"{base}.{proj}.bias"][rows].clone()
        state[f"{base}.out_proj.weight"] = state[f"{base}.out_proj.weight"][:, rows].clone()
    changes = {"num_heads": tuple(len(k) for k in heads), "head_dim": head_dim}
    return rebuild_upstream(upstream, changes, state)


def prune_ffn(upstream: nn.Module, keep: float, counts: Sequence[int] | None = None) -> nn.Module:
    """A new upstream keeping the fraction `keep` (or `counts[layer]`) of every layer's FFN units."""
    prefix, encoder = transformer_encoder(upstream)
    units = kept_units(upstream, keep, counts)
    state = dict(upstream.state_dict())
    for index, kept in enumerate(units):
        if not kept:
            continue
        base = f"{prefix}.layers.{index}.ffn" if prefix else f"layers.{index}.ffn"
        rows = torch.tensor(kept)
        state[f"{base}.fc1.weight"] = state[f"{base}.fc1.weight"][rows].clone()
        state[f"{base}.fc1.bias"] = state[f"{base}.fc1.bias"][rows].clone()
        state[f"{base}.fc2.weight"] = state[f"{base}.fc2.weight"][:, rows].clone()
    return rebuild_upstream(upstream, {"ffn_size": tuple(len(k) for k in units)}, state)


def ffn_singular_values(upstream: nn.Module) -> list[dict[str, Tensor]]:
    """Per layer, the singular values (descending) of its fc1 and fc2 weights; {} for a layer without FFN."""
    _, encoder = transformer_encoder(upstream)
    return [{} if b.ffn is None else {name: torch.linalg.svdvals(getattr(b.ffn, name).weight.detach().float())
                                      for name in ("fc1", "fc2")} for b in encoder.layers]


def singular_value_summary(values: Tensor, energy: float = 0.9) -> dict[str, float | int]:
    """Largest, median and smallest singular value, their count, and how many hold `energy` of Σσ²."""
    squares = values.double().square()
    cumulative = torch.cumsum(squares, 0) / squares.sum().clamp(min=torch.finfo(torch.float64).tiny)
    needed = int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64)).item()) + 1
    return {"count": values.numel(), "max": float(values[0]), "median": float(values.median()),
            "min": float(values[-1]), f"rank_{round(energy * 100)}": min(needed, values.numel())}


def layer_sizes(upstream: nn.Module) -> dict[str, list[int]]:
    """Heads and FFN units of every transformer layer."""
    _, encoder = transformer_encoder(upstream)
    return {"heads": [0 if b.attention is None else b.attention.num_heads for b in encoder.layers],
            "ffn": [0 if b.ffn is None else b.ffn.fc1.out_features for b in encoder.layers]}


PRUNERS = {"heads": prune_heads, "ffn": prune_ffn}


def step_report(model: nn.Module, method: str, seed: int = 0) -> dict[str, Any]:
    """Layer sizes, parameters and MACs per audio second (one 1 s utterance) of `model`; for "ffn" also the
    summary of each layer's fc1/fc2 singular values."""
    samples = int(getattr(model, "sample_rate", 16000))
    wavs = 0.1 * torch.randn(1, samples, generator=torch.Generator().manual_seed(seed))
    by_kind, _, frames = count_macs(model.eval(), wavs, torch.tensor([samples]))
    report: dict[str, Any] = {**layer_sizes(model), "params": sum(count_parameters(model).values()),
                              "macs_per_second": sum(by_kind.values()), "frames_per_second": frames}
    if method == "ffn":
        report["singular_values"] = [{name: singular_value_summary(values) for name, values in layer.items()}
                                     for layer in ffn_singular_values(model)]
    return report

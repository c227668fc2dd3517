"""Structured pruning of attention heads and feed-forward units: one-shot, by weight magnitude, no retraining.

    smaller = prune_heads(upstream, keep=0.5)   # half of all heads, ranked globally across layers
    smaller = prune_ffn(upstream, keep=0.5)     # half of the FFN units of every layer

Both return a NEW upstream of the same family whose q/k/v/out or fc1/fc2 projections are physically smaller
(the kept rows and columns copied), with per-layer `num_heads` / `ffn_size` lists in its config, so
`export_upstream` writes it and `load_upstream` reads it back with its real shapes. Nothing is trained: the
iterative pruning with continued SSL training or distillation of the literature is not built here.

`compress_series` (the `speechrep compress` command) writes one export per keep fraction and `compress.json`
with the layer sizes, parameters and MACs per audio second (profiler, 1 s) of each step.

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
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from speechrep.compress.profile import count_macs, count_parameters
from speechrep.errors import ConfigError
from speechrep.nn.transformer import FeedForward, SelfAttention, TransformerEncoder
from speechrep.storage import OutputFolder, atomic_write_json
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.extract import load_upstream_flag

NOTE = ("one-shot structured pruning by weight magnitude, without retraining: no continued SSL training or "
        "distillation after pruning")

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


def kept_heads(upstream: nn.Module, keep: float) -> list[list[int]]:
    """Per layer, the kept heads (sorted): the round(keep · all heads) most important, globally."""
    check_keep(keep)
    _, encoder = transformer_encoder(upstream)
    scores = [(float(s), layer, head) for layer, block in enumerate(encoder.layers)
              if block.attention is not None for head, s in enumerate(head_importance(block.attention))]
    count = max(1, round(keep * len(scores)))
    chosen = sorted(scores, key=lambda item: (-item[0], item[1], item[2]))[:count]
    return [sorted(h for _, layer, h in chosen if layer == index) for index in range(len(encoder.layers))]


def kept_units(upstream: nn.Module, keep: float) -> list[list[int]]:
    """Per layer, the kept FFN units (sorted): the round(keep · F) most important, at least one."""
    check_keep(keep)
    _, encoder = transformer_encoder(upstream)
    kept: list[list[int]] = []
    for block in encoder.layers:
        if block.ffn is None:
            kept.append([])
            continue
        scores = ffn_importance(block.ffn)
        count = max(1, round(keep * scores.numel()))
        kept.append(sorted(torch.argsort(scores, descending=True, stable=True)[:count].tolist()))
    return kept


def _rebuild(upstream: nn.Module, changes: dict[str, object], state: dict[str, Tensor]) -> nn.Module:
    """A new upstream of the same class with its config changed and `state` loaded (strictly); its throwaway
    initialisation leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        model = type(upstream)(dataclasses.replace(upstream.config, **changes))
    model.load_state_dict(state)
    return model.train(upstream.training)


def prune_heads(upstream: nn.Module, keep: float) -> nn.Module:
    """A new upstream keeping the fraction `keep` of all attention heads (global L1 ranking; module doc)."""
    prefix, encoder = check_prunable(upstream, "heads")
    heads = kept_heads(upstream, keep)
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
    return _rebuild(upstream, changes, state)


def prune_ffn(upstream: nn.Module, keep: float) -> nn.Module:
    """A new upstream keeping the fraction `keep` of every layer's FFN units (per-layer ranking)."""
    prefix, encoder = transformer_encoder(upstream)
    units = kept_units(upstream, keep)
    state = dict(upstream.state_dict())
    for index, kept in enumerate(units):
        if not kept:
            continue
        base = f"{prefix}.layers.{index}.ffn" if prefix else f"layers.{index}.ffn"
        rows = torch.tensor(kept)
        state[f"{base}.fc1.weight"] = state[f"{base}.fc1.weight"][rows].clone()
        state[f"{base}.fc1.bias"] = state[f"{base}.fc1.bias"][rows].clone()
        state[f"{base}.fc2.weight"] = state[f"{base}.fc2.weight"][:, rows].clone()
    return _rebuild(upstream, {"ffn_size": tuple(len(k) for k in units)}, state)


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
    by_kind, _, _ = count_macs(model.eval(), wavs, torch.tensor([samples]))
    report: dict[str, Any] = {**layer_sizes(model), "params": sum(count_parameters(model).values()),
                              "macs_per_second": sum(by_kind.values())}
    if method == "ffn":
        report["singular_values"] = [{name: singular_value_summary(values) for name, values in layer.items()}
                                     for layer in ffn_singular_values(model)]
    return report


def compress_series(method: str, upstream: str, out: Path, keeps: Sequence[float],
                    overwrite: bool = False) -> dict[str, Any]:
    """Prune `upstream` (a name or a model path) by `method` at every fraction of `keeps`: exports
    OUT/keep_<f>/ (an exported step is loaded, not pruned again) and writes OUT/compress.json."""
    if not keeps:
        raise ConfigError("--keep: give at least one fraction")
    for keep in keeps:
        check_keep(keep)
    model = load_upstream_flag(upstream, flag="--upstream").eval()
    check_prunable(model, method)
    with OutputFolder(Path(out), "compress", {"method": method, "upstream": upstream}, overwrite):
        steps = []
        for keep in sorted(set(keeps), reverse=True):
            folder = Path(out) / f"keep_{keep:g}"
            if (folder / "config.json").is_file():  # exports are atomic: a config means a complete step
                pruned = load_upstream(folder)
            else:
                pruned = PRUNERS[method](model, keep)
                export_upstream(pruned, folder, {"compress": method, "keep": keep, "upstream": upstream,
                                                 "note": NOTE})
            steps.append({"keep": keep, "folder": folder.name, **step_report(pruned, method)})
        report = {"method": method, "upstream": upstream, "note": NOTE,
                  "original": step_report(model, method), "steps": steps}
        atomic_write_json(Path(out) / "compress.json", report)
    return report

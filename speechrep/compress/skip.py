"""Skip-ahead: replace the attention of the most diagonal layers by the identity map (one step; `series.py`
chains the steps and retrains between them).

    diagonality = attention_diagonality(upstream, batches, band=1)    # one value per layer, on real audio
    smaller = skip_attention(upstream, keep=0.75, diagonality=diagonality)
    skipped_layers(smaller)                                           # e.g. [9, 10, 11]

The JSALT 2022 head-pruning study ("skip ahead when the attention map is sufficiently diagonal") observed
that in some layers every frame attends mostly to itself and its neighbours. Replacing such a layer's map by
the identity I makes its attention output out_proj(v_proj(x)), which `skip_attention` folds into ONE D×D
linear (W = W_out·W_v, b = W_out·b_v + b_out; `speechrep.nn.transformer.IdentityAttention`): the layer then
costs T·D² multiply-accumulates instead of 4·T·D² projections plus 2·T²·D attention products. The config
field `identity_attention` (0-based layer indices) records the skipped layers, so `export_upstream` and
`load_upstream` round-trip the model.

Diagonality of a layer is the attention mass within |i − j| ≤ `band` of the diagonal (band 0: the diagonal
alone), averaged over heads and valid query frames of each utterance, then over utterances (each utterance
counts once, whatever its length). A uniform map over T frames scores about (2·band + 1)/T, a diagonal map 1.

A layer without attention (0 heads) has no map: its diagonality is nan and it is never skipped. An already
skipped layer reports the identity map, so its diagonality is 1 and it stays skipped: its attention weights
are gone, and skipping more layers of a skipped model (an iterative series) keeps the earlier choice.

The fraction is over the layers with attention: keep=0.75 on 12 layers skips round(0.25·12) = 3 of them.
Skipped layers show 0 heads in `structured.layer_sizes` (they have none); `skip_layer_sizes` adds which.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from speechrep.compress.structured import check_keep, layer_sizes, rebuild_upstream, transformer_encoder
from speechrep.errors import ConfigError
from speechrep.nn.transformer import IdentityAttention, TransformerEncoder


def _skippable(upstream: nn.Module) -> tuple[str, TransformerEncoder]:
    """`transformer_encoder(upstream)`, or a ConfigError if its config cannot record skipped layers."""
    prefix, encoder = transformer_encoder(upstream)
    if "identity_attention" not in {f.name for f in dataclasses.fields(upstream.config)}:
        raise ConfigError(f"{type(upstream).__name__}: its config has no identity_attention field; "
                          "skip-ahead needs one (wav2vec2, HuBERT, WavLM, data2vec, DistilHuBERT, MelHuBERT, "
                          "BEST-RQ)")
    return prefix, encoder


def skipped_layers(upstream: nn.Module) -> list[int]:
    """The 0-based indices of the layers whose attention is the identity (sorted)."""
    _, encoder = transformer_encoder(upstream)
    return [index for index, block in enumerate(encoder.layers) if block.identity is not None]


def skip_layer_sizes(upstream: nn.Module) -> dict[str, list[int]]:
    """`structured.layer_sizes` (heads, FFN units per layer; a skipped layer has 0 heads) and "skipped"."""
    return {**layer_sizes(upstream), "skipped": skipped_layers(upstream)}


def band_mass(maps: Tensor, band: int) -> Tensor:
    """(B, H, T, T) attention maps → (B, T) float64: per query i, the mass on keys j with |i − j| <= band,
    averaged over heads."""
    queries, keys = maps.shape[-2], maps.shape[-1]
    distance = (torch.arange(queries, device=maps.device)[:, None]
                - torch.arange(keys, device=maps.device)[None, :]).abs()
    inside = (distance <= band).to(maps.dtype)
    return (maps * inside).sum(-1).double().mean(1)


@torch.no_grad()
def attention_diagonality(upstream: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                          band: int = 1) -> list[float]:
    """Per layer, the mean attention mass within `band` frames of the diagonal (module doc); nan for a layer
    without attention. `batches` yields (wavs (B, N) float, wav_lens (B,)); the upstream runs in eval mode
    (no dropout) on its own device and is left in the mode it was in."""
    if isinstance(band, bool) or not isinstance(band, int) or band < 0:
        raise ConfigError(f"band {band!r}: must be an int >= 0")
    training = upstream.training
    sums: list[float] = []
    counts: list[int] = []
    device = next(upstream.parameters()).device
    try:
        upstream.eval()
        for wavs, wav_lens in batches:
            out = upstream(wavs.to(device), wav_lens.to(device), output_attentions=True)
            if out.attentions is None:
                raise ConfigError(f"{type(upstream).__name__} returns no attention maps")
            if not sums:
                sums, counts = [0.0] * len(out.attentions), [0] * len(out.attentions)
            lengths = out.lengths.to(device)
            for index, maps in enumerate(out.attentions):
                if maps.shape[1] == 0:  # no attention in this layer
                    continue
                mass = band_mass(maps.float(), band)  # (B, T)
                valid = (torch.arange(mass.shape[1], device=device)[None, :] < lengths[:, None]).double()
                per_utterance = (mass * valid).sum(1) / valid.sum(1).clamp(min=1.0)
                sums[index] += float(per_utterance.sum())
                counts[index] += mass.shape[0]
    finally:
        upstream.train(training)
    if not sums:
        raise ConfigError("attention_diagonality: no batches to measure the attention maps on")
    return [total / count if count else math.nan for total, count in zip(sums, counts)]


def skip_attention(upstream: nn.Module, keep: float, diagonality: Sequence[float]) -> nn.Module:
    """A NEW upstream in which the round((1 − keep) · L) most diagonal of the L layers with attention have
    identity attention, folded into one linear each (module doc). Already skipped layers stay skipped and
    count towards that number; ties go to the lower layer. keep=1 skips nothing new (an exact copy)."""
    check_keep(keep)
    prefix, encoder = _skippable(upstream)
    layers = list(encoder.layers)
    if len(diagonality) != len(layers):
        raise ConfigError(f"diagonality: {len(diagonality)} values for {len(layers)} layers")
    already = [index for index, block in enumerate(layers) if block.identity is not None]
    candidates = [index for index, block in enumerate(layers) if block.attention is not None]
    unknown = [index for index in candidates if not math.isfinite(float(diagonality[index]))]
    if unknown:
        raise ConfigError(f"diagonality of layer {unknown[0]} is {diagonality[unknown[0]]}, not a number")
    count = round((1 - keep) * (len(already) + len(candidates)))
    ranked = sorted(candidates, key=lambda index: (-float(diagonality[index]), index))
    chosen = ranked[:max(0, count - len(already))]
    state = dict(upstream.state_dict())
    for index in chosen:
        base = f"{prefix}.layers.{index}" if prefix else f"layers.{index}"
        weight, bias = IdentityAttention.folded(*(state[f"{base}.attention.{name}"] for name in (
            "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias")))
        for key in [k for k in state if k.startswith(f"{base}.attention.")]:
            del state[key]
        state[f"{base}.identity.proj.weight"], state[f"{base}.identity.proj.bias"] = weight, bias
    return rebuild_upstream(upstream, {"identity_attention": tuple(sorted(already + chosen))}, state)

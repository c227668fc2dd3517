"""WavLM (Chen et al., 2022, https://arxiv.org/abs/2110.13900): the wav2vec 2.0 encoder with a gated relative
position bias shared by all layers (bucketed like T5, scaled per query and head by a gate computed from the
query's content), pre-trained by masked prediction on denoised targets of noisy/overlapped speech."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import LARGE, TINY, Wav2Vec2, Wav2Vec2Config


@dataclass(frozen=True)
class WavLMConfig(Wav2Vec2Config):
    """WavLM architecture: wav2vec 2.0 fields, with 320 relative-position buckets up to distance 800."""

    rel_pos_buckets: int = 320
    rel_pos_max_distance: int = 800


@register_family
class WavLM(Wav2Vec2):
    """WavLM encoder satisfying the Upstream contract."""

    family = "wavlm"
    config_class = WavLMConfig


# checkpoint keys: HF (gru_rel_pos_*, rel_attn_embed) and WavLM's release (grep_linear, grep_a,
# relative_attention_bias) are handled by wav2vec2.convert_hf_state_dict / convert_fairseq_state_dict


@register_upstream("wavlm_base")
def wavlm_base(**overrides: Any) -> WavLM:
    """WavLM Base: 12 post-LN layers, width 768, group-norm CNN, raw waveform input."""
    return WavLM(replace(WavLMConfig(), **overrides))


@register_upstream("wavlm_base_plus")
def wavlm_base_plus(**overrides: Any) -> WavLM:
    """WavLM Base+: the Base architecture (trained on 94k hours instead of 960)."""
    return WavLM(replace(WavLMConfig(), **overrides))


@register_upstream("wavlm_large")
def wavlm_large(**overrides: Any) -> WavLM:
    """WavLM Large: 24 layer-norm-first layers, width 1024, layer-norm CNN, normalised input."""
    config = WavLMConfig(**dict(LARGE, conv_norm="layer", layer_norm_first=True, normalize_waveform=True))
    return WavLM(replace(config, **overrides))


@register_upstream("wavlm_tiny")
def wavlm_tiny(**overrides: Any) -> WavLM:
    """A 2-layer, width-32 WavLM for tests (32 buckets up to distance 64)."""
    return WavLM(replace(WavLMConfig(**dict(TINY, rel_pos_buckets=32, rel_pos_max_distance=64)), **overrides))

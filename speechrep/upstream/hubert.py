"""HuBERT (Hsu et al., 2021, https://arxiv.org/abs/2106.07447): the wav2vec 2.0 encoder trained to predict
k-means cluster labels of masked frames. The upstream is the encoder alone; the cluster-prediction head
belongs to pre-training (`speechrep.pretrain`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import LARGE, TINY, Wav2Vec2, Wav2Vec2Config


@dataclass(frozen=True)
class HuBERTConfig(Wav2Vec2Config):
    """HuBERT architecture: the same fields and Base defaults as wav2vec 2.0."""


@register_family
class HuBERT(Wav2Vec2):
    """HuBERT encoder satisfying the Upstream contract (architecture shared with wav2vec 2.0)."""

    family = "hubert"
    config_class = HuBERTConfig


# checkpoint keys: HuBERT's HF and fairseq layouts are wav2vec 2.0's (see wav2vec2.convert_*_state_dict)


@register_upstream("hubert_base")
def hubert_base(**overrides: Any) -> HuBERT:
    """HuBERT Base: 12 post-LN layers, width 768, group-norm CNN, raw waveform input."""
    return HuBERT(replace(HuBERTConfig(), **overrides))


@register_upstream("hubert_large")
def hubert_large(**overrides: Any) -> HuBERT:
    """HuBERT Large: 24 layer-norm-first layers, width 1024, layer-norm CNN, normalised input."""
    config = HuBERTConfig(**dict(LARGE, conv_norm="layer", layer_norm_first=True, normalize_waveform=True))
    return HuBERT(replace(config, **overrides))


@register_upstream("hubert_tiny")
def hubert_tiny(**overrides: Any) -> HuBERT:
    """A 2-layer, width-32 HuBERT for tests."""
    return HuBERT(replace(HuBERTConfig(**TINY), **overrides))

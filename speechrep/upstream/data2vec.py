"""data2vec audio (Baevski et al., 2022, https://arxiv.org/abs/2202.03555): a wav2vec 2.0-style
post-LN encoder with a layer-norm CNN and a stack of 5 narrow positional convolutions, trained to regress the
averaged top layers of an EMA teacher at masked frames. Input waveforms are normalised per utterance."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import LARGE, TINY, Wav2Vec2, Wav2Vec2Config


@dataclass(frozen=True)
class Data2VecConfig(Wav2Vec2Config):
    """data2vec audio architecture: wav2vec 2.0 fields with data2vec's defaults."""

    conv_norm: str = "layer"
    pos_conv_kernel: int = 19
    pos_conv_depth: int = 5
    normalize_waveform: bool = True


@register_family
class Data2Vec(Wav2Vec2):
    """data2vec audio encoder satisfying the Upstream contract (the EMA teacher is pre-training only)."""

    family = "data2vec"
    config_class = Data2VecConfig


# checkpoint keys: HF pos_conv_embed.layers.N / fairseq encoder.pos_conv.N.0 map in wav2vec2's converters;
# the fairseq EMA teacher (`_ema`, `ema.*`) and regression head (`final_proj`) are dropped


@register_upstream("data2vec_base")
def data2vec_base(**overrides: Any) -> Data2Vec:
    """data2vec audio Base: 12 post-LN layers, width 768."""
    return Data2Vec(replace(Data2VecConfig(), **overrides))


@register_upstream("data2vec_large")
def data2vec_large(**overrides: Any) -> Data2Vec:
    """data2vec audio Large: 24 post-LN layers, width 1024."""
    return Data2Vec(replace(Data2VecConfig(**LARGE), **overrides))


@register_upstream("data2vec_tiny")
def data2vec_tiny(**overrides: Any) -> Data2Vec:
    """A 2-layer, width-32 data2vec audio for tests (3 positional convs of kernel 5)."""
    config = Data2VecConfig(**dict(TINY, pos_conv_kernel=5, pos_conv_depth=3))
    return Data2Vec(replace(config, **overrides))

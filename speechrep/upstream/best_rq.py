"""BEST-RQ encoder (Chiu et al. 2022, https://arxiv.org/abs/2202.01855): a Transformer on stacked log-mel.

The paper pairs its random-projection quantizer objective with a Conformer after a 4× convolutional
subsampling (40 ms frames). The hub has no Conformer, so this family is MelHuBERT's log-mel Transformer
(`speechrep.upstream.melhubert`) with BEST-RQ's front end: 80 log-mel bins standardised by corpus statistics,
4 frames stacked (stride 640 = 40 ms) and pre-LN layers. The random projection, codebook and softmax head
belong to pre-training (`speechrep.pretrain.best_rq`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from speechrep.upstream.melhubert import MelHuBERT, MelHuBERTConfig
from speechrep.upstream.registry import register_family, register_upstream


@dataclass(frozen=True)
class BestRQConfig(MelHuBERTConfig):
    """BEST-RQ encoder: 80 log-mel bins, 4 frames per 40 ms input frame, pre-LN Transformer layers."""

    num_mel_bins: int = 80
    window_type: str = "povey"
    stack_frames: int = 4
    layer_norm_first: bool = True


@register_family
class BestRQ(MelHuBERT):
    """BEST-RQ encoder satisfying the Upstream contract (architecture shared with MelHuBERT)."""

    family = "best_rq"
    config_class = BestRQConfig


@register_upstream("best_rq_base")
def best_rq_base(**overrides: Any) -> BestRQ:
    """BEST-RQ Base: 12 pre-LN layers × 768 on 80 log-mel stacked ×4 (40 ms frames)."""
    return BestRQ(replace(BestRQConfig(), **overrides))


@register_upstream("best_rq_tiny")
def best_rq_tiny(**overrides: Any) -> BestRQ:
    """A 2-layer, width-32 BEST-RQ encoder for tests."""
    config = BestRQConfig(
        hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, pos_conv_kernel=16, pos_conv_groups=4
    )
    return BestRQ(replace(config, **overrides))

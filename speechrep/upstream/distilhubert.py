"""DistilHuBERT (Chang et al., 2022, https://arxiv.org/abs/2110.01900): HuBERT Base's CNN and a 2-layer
Transformer, trained to predict HuBERT's layers 4, 8 and 12 with one linear head each (the heads are used only
by pre-training and are not part of the upstream). Its feature projection has no layer norm. A Hugging Face
copy (model_type "hubert") loads as a 2-layer HuBERT with the same weights and outputs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import TINY, Wav2Vec2, Wav2Vec2Config


@dataclass(frozen=True)
class DistilHuBERTConfig(Wav2Vec2Config):
    """DistilHuBERT architecture: HuBERT Base with 2 layers and no feature-projection layer norm."""

    num_layers: int = 2
    feature_projection_norm: bool = False


class DistilHuBERTHeads(nn.Module):
    """Pre-training heads: one linear map per teacher layer from the student's last hidden state."""

    def __init__(self, hidden_size: int, target_size: int, num_targets: int = 3):
        super().__init__()
        self.num_targets, self.target_size = num_targets, target_size
        self.linear = nn.Linear(hidden_size, target_size * num_targets)

    def forward(self, last_hidden: Tensor) -> Tensor:
        """(B, T, H) → (B, num_targets, T, target_size) predictions of the teacher layers."""
        batch, length, _ = last_hidden.shape
        out = self.linear(last_hidden).view(batch, length, self.num_targets, self.target_size)
        return out.transpose(1, 2)


@register_family
class DistilHuBERT(Wav2Vec2):
    """DistilHuBERT student encoder satisfying the Upstream contract."""

    family = "distilhubert"
    config_class = DistilHuBERTConfig


# checkpoint keys: the HF layout is HuBERT's (see wav2vec2.convert_hf_state_dict)


@register_upstream("distilhubert")
def distilhubert(**overrides: Any) -> DistilHuBERT:
    """DistilHuBERT: HuBERT Base CNN + 2 post-LN layers of width 768."""
    return DistilHuBERT(replace(DistilHuBERTConfig(), **overrides))


@register_upstream("distilhubert_tiny")
def distilhubert_tiny(**overrides: Any) -> DistilHuBERT:
    """A width-32 DistilHuBERT for tests."""
    return DistilHuBERT(replace(DistilHuBERTConfig(**dict(TINY, feature_projection_norm=False)), **overrides))

"""DistilHuBERT (Chang et al., 2022, https://arxiv.org/abs/2110.01900): HuBERT Base's CNN and a 2-layer
Transformer, trained to predict HuBERT's layers 4, 8 and 12 with one linear head each (the heads are used only
by pre-training and are not part of the upstream). Its feature projection has no layer norm. A Hugging Face
copy (model_type "hubert") loads as a 2-layer HuBERT with the same weights and outputs."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import (
    TINY,
    Wav2Vec2,
    Wav2Vec2Config,
    config_from_fairseq,
    convert_fairseq_state_dict,
)


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


# --- checkpoint-key conversion ---
# The HF layout is HuBERT's (see wav2vec2.convert_hf_state_dict). S3PRL's release
# (`distilhubert_ls960_4-8-12.ckpt`, written by s3prl/pretrain/distiller) is {"Distiller": state dict,
# "Config": {"distiller": {...}, "teacher": ...}, "Optimizer", "Step", "Args", ...}; its student uses
# fairseq's key names (feature_extractor.conv_layers.*, post_extract_proj, encoder.pos_conv.0.weight_g/v,
# encoder.layers.*.self_attn.*), plus the prediction heads (output_layer.*) and, for other task-embedding
# types, task_embedding.*.

_S3PRL_HEADS = re.compile(r"^(output_layer|task_embedding)\.")
_DISTILLER_DEFAULT_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


def from_s3prl(checkpoint: dict[str, Any], source: str) -> tuple[DistilHuBERTConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of S3PRL's DistilHuBERT release; the prediction heads are dropped.

    S3PRL's hidden states start with the projected CNN features (before the positional conv and layer norm);
    ours start with the first layer's input after them, as for HuBERT. The layers' outputs are the same."""
    cfg = dict(checkpoint["Config"]["distiller"])
    for key, allowed in (("activation_fn", ("gelu",)), ("attention_type", ("original",)),
                         ("task_emb_type", ("expand-last", "none", "self-hidden"))):
        if str(cfg.get(key, allowed[0])) not in allowed:
            raise ConfigError(f"{source}: DistilHuBERT {key}={cfg[key]!r} is not supported "
                              f"({', '.join(allowed)})")
    cfg["conv_feature_layers"] = cfg.get("extractor_conv_feature_layers", _DISTILLER_DEFAULT_CONV)
    cfg["encoder_layers"] = cfg.get("encoder_layers", 1)  # the distiller's own default
    cfg["activation_dropout"] = cfg.get("activation_dropout", 0.1)
    config = config_from_fairseq(cfg, DistilHuBERTConfig(), normalize=False)
    state = {key: value for key, value in checkpoint["Distiller"].items() if not _S3PRL_HEADS.match(key)}
    return config, convert_fairseq_state_dict(state)


@register_upstream("distilhubert")
def distilhubert(**overrides: Any) -> DistilHuBERT:
    """DistilHuBERT: HuBERT Base CNN + 2 post-LN layers of width 768."""
    return DistilHuBERT(replace(DistilHuBERTConfig(), **overrides))


@register_upstream("distilhubert_tiny")
def distilhubert_tiny(**overrides: Any) -> DistilHuBERT:
    """A width-32 DistilHuBERT for tests."""
    return DistilHuBERT(replace(DistilHuBERTConfig(**dict(TINY, feature_projection_norm=False)), **overrides))

"""Shallow students distilled from a model: the model's own architecture cut to its first n layers, trained
with the DistilHuBERT objective.

    student = shallow_student(teacher, num_layers=2)     # a copy of the front end and the first 2 layers
    objective = distillation_objective(student, teacher, cfg)

The student is the teacher's family with `num_layers` layers (per-layer head and FFN sizes cut to match),
initialised from the teacher's front end, statistics and first layers (DistilHuBERT's initialisation). Its
last layer predicts `proportional_layers` of the teacher (e.g. 1, 3 and 4 of a 4-layer teacher) through one
linear head each; the heads belong to the objective and are not exported (`pretrain/distilhubert.py`).
"""
from __future__ import annotations

import re
from typing import Any

from torch import nn

from speechrep.compress.structured import rebuild_upstream, transformer_encoder
from speechrep.errors import ConfigError
from speechrep.pretrain.distilhubert import Config as DistilConfig
from speechrep.pretrain.distilhubert import DistilHuBERTObjective

_PER_LAYER = ("num_heads", "ffn_size")


def student_layers(teacher: nn.Module, keep: float) -> int:
    """The layers a student keeping the fraction `keep` of the teacher's has: round(keep · L), at least 1."""
    _, encoder = transformer_encoder(teacher)
    return max(1, round(keep * len(encoder.layers)))


def shallow_student(teacher: nn.Module, num_layers: int) -> nn.Module:
    """A new upstream of the teacher's family: its first `num_layers` layers and all before them."""
    prefix, encoder = transformer_encoder(teacher)
    total = len(encoder.layers)
    if not 1 <= num_layers <= total:
        raise ConfigError(f"a student of {num_layers} layers: the teacher has {total}")
    config = teacher.config
    changes: dict[str, Any] = {"num_layers": num_layers}
    for name in _PER_LAYER:
        value = getattr(config, name)
        if not isinstance(value, int):
            changes[name] = tuple(value)[:num_layers]
    if getattr(config, "identity_attention", ()):
        changes["identity_attention"] = tuple(i for i in config.identity_attention if i < num_layers)
    layer_key = re.compile(rf"^{re.escape(prefix + '.' if prefix else '')}layers\.(\d+)\.")
    state = {k: v for k, v in teacher.state_dict().items()
             if not ((m := layer_key.match(k)) and int(m.group(1)) >= num_layers)}
    return rebuild_upstream(teacher, changes, state)


def distillation_objective(student: nn.Module, teacher: nn.Module, cfg: Any) -> nn.Module:
    """DistilHuBERT's objective: the student's last layer predicts proportional layers of the teacher."""
    distil = DistilConfig(teacher="(in memory)", cosine_weight=cfg.cosine_weight,
                          target_layers=cfg.target_layers, init_from_teacher=False)
    return DistilHuBERTObjective(student, teacher, distil)

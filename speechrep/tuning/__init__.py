"""Tuning strategies: how a downstream task adapts an upstream (frozen, full, and later adapters, LoRA, ...).

    tuning = get_tuning("frozen")
    prepared = tuning.prepare(upstream)                  # the module the downstream model runs instead
    groups = tuning.parameter_groups(prepared, task_cfg)  # its trainable parameters, with their options

Every strategy follows `TuningStrategy` (see `speechrep.tuning.base`) and is registered by name here.
"""
from __future__ import annotations

from speechrep.errors import ConfigError
from speechrep.tuning.base import ParamGroup, TuningStrategy
from speechrep.tuning.frozen import Frozen, FrozenUpstream
from speechrep.tuning.full import Full

TUNINGS: dict[str, TuningStrategy] = {strategy.name: strategy for strategy in (Frozen(), Full())}


def list_tunings() -> list[str]:
    """Names of the registered tuning strategies, sorted."""
    return sorted(TUNINGS)


def get_tuning(name: str) -> TuningStrategy:
    """The strategy registered as `name`; unknown names raise ConfigError listing the known ones."""
    if name not in TUNINGS:
        raise ConfigError(f"--tuning {name!r}: unknown tuning strategy; choose from {', '.join(list_tunings())}")
    return TUNINGS[name]


__all__ = ["TUNINGS", "Frozen", "FrozenUpstream", "Full", "ParamGroup", "TuningStrategy", "get_tuning",
           "list_tunings"]

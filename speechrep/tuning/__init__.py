"""Tuning strategies: how a downstream task adapts an upstream (frozen, full, bitfit, houlsby, adapterbias, lora,
prefix, prompt).

    tuning = get_tuning("frozen")
    prepared = tuning.prepare(upstream)                  # the module the downstream model runs instead
    groups = tuning.parameter_groups(prepared, task_cfg)  # its trainable parameters, with their options

Every strategy follows `TuningStrategy` (see `speechrep.tuning.base`) and is registered by name here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from speechrep.errors import ConfigError
from speechrep.tuning.adapters import AdapterBias, AdapterBiasOptions, AdapterOptions, Houlsby
from speechrep.tuning.base import ParamGroup, TuningStrategy
from speechrep.tuning.bitfit import BitFit, BitFitOptions
from speechrep.tuning.frozen import Frozen, FrozenUpstream
from speechrep.tuning.full import Full
from speechrep.tuning.lora import LoRA, LoRAOptions
from speechrep.tuning.prompts import Prefix, PrefixOptions, Prompt, PromptOptions

TUNINGS: dict[str, TuningStrategy] = {strategy.name: strategy for strategy in (
    Frozen(), Full(), BitFit(), Houlsby(), Houlsby(parallel=True), AdapterBias(), LoRA(), Prefix(), Prompt())}

# name -> (options dataclass, strategy from options): the strategies that take `name:key=value,...` options
_OPTIONS: dict[str, tuple[type, Callable[[Any], TuningStrategy]]] = {
    "bitfit": (BitFitOptions, BitFit),
    "houlsby": (AdapterOptions, Houlsby),
    "houlsby_parallel": (AdapterOptions, lambda options: Houlsby(options, parallel=True)),
    "adapterbias": (AdapterBiasOptions, AdapterBias),
    "lora": (LoRAOptions, LoRA),
    "prefix": (PrefixOptions, Prefix),
    "prompt": (PromptOptions, Prompt),
}

_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _option_value(value: str, default: Any) -> Any:
    """`value` as the type of the option's `default` (a tuple: `/`-separated; a bool: true/false, yes/no, 1/0);
    ValueError if it is not one."""
    if isinstance(default, tuple):
        return tuple(v for v in value.split("/") if v)
    if isinstance(default, bool):
        if value.strip().lower() not in _BOOLS:
            raise ValueError(value)
        return _BOOLS[value.strip().lower()]
    return type(default)(value)


def list_tunings() -> list[str]:
    """Names of the registered tuning strategies, sorted."""
    return sorted(TUNINGS)


def get_tuning(name: str) -> TuningStrategy:
    """The strategy registered as `name`, or `name:key=value,...` with options (e.g. `lora:rank=4,alpha=8`;
    targets are `/`-separated, booleans true/false, yes/no or 1/0); unknown names and keys, and values that do
    not parse, raise one ConfigError line."""
    base, _, spec = name.partition(":")
    if base not in TUNINGS:
        raise ConfigError(f"--tuning {base!r}: unknown tuning strategy; choose from {', '.join(list_tunings())}")
    if not spec:
        return TUNINGS[base]
    if base not in _OPTIONS:
        raise ConfigError(f"--tuning {name}: {base} takes no options")
    options_type, build = _OPTIONS[base]
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    values: dict[str, Any] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if key.strip() not in fields or not sep:
            known = ", ".join(fields) or "none"
            raise ConfigError(f"--tuning {name}: unknown option {item!r} (key=value; options of {base}: {known})")
        default = fields[key.strip()].default
        try:
            values[key.strip()] = _option_value(value, default)
        except ValueError:
            raise ConfigError(f"--tuning {name}: {key.strip()}={value!r} is not a {type(default).__name__}") from None
    strategy = build(options_type(**values))
    strategy.name = name  # the options are part of what a results row and an --out's settings record
    return strategy


def with_options(name: str, overrides: Sequence[str]) -> tuple[str, list[str]]:
    """`--tuning NAME` plus the `tuning.key=value` items of `overrides` as one `NAME:key=value,...` spec, and the
    other overrides (e.g. `("lora", ["tuning.rank=4", "train.lr=1e-3"])` → `("lora:rank=4", ["train.lr=1e-3"])`)."""
    options = [item.partition(".")[2] for item in overrides if item.startswith("tuning.")]
    rest = [item for item in overrides if not item.startswith("tuning.")]
    if not options:
        return name, rest
    return name + ("," if ":" in name else ":") + ",".join(options), rest


__all__ = ["TUNINGS", "AdapterBias", "BitFit", "Frozen", "FrozenUpstream", "Full", "Houlsby", "LoRA",
           "ParamGroup", "Prefix", "Prompt", "TuningStrategy", "get_tuning", "list_tunings", "with_options"]

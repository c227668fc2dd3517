"""Name → constructor registry for upstreams (timm style): names are architectures, tags after a dot are
weights.

Two explicit tables: `register_upstream(name)` registers a constructor under a name; `register_family`
registers a model class that can be exported and re-loaded under its `family` attribute. This module imports
nothing from the family modules: importing the package `speechrep.upstream` imports every family
(`families.py`), so the tables are complete before any lookup (family modules → registry, never back).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable, TypeVar

from torch import nn

from speechrep.errors import CheckpointError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[str, type[nn.Module]] = {}
ModelClass = TypeVar("ModelClass", bound=type)


def register_upstream(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a constructor under `name`; registering a name twice is an error."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"upstream {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def register_family(cls: ModelClass) -> ModelClass:
    """Class decorator: `cls` (a str `family`, a dataclass `config_class`) can be exported and re-loaded."""
    family, config_class = getattr(cls, "family", None), getattr(cls, "config_class", None)
    if not isinstance(family, str) or not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{cls.__name__}: a family needs a str `family` and a dataclass `config_class`")
    if family in _FAMILIES and _FAMILIES[family] is not cls:
        raise ValueError(f"family {family!r} is already registered by {_FAMILIES[family].__name__}")
    _FAMILIES[family] = cls
    return cls


def list_upstreams(pattern: str = "*") -> list[str]:
    """Registered upstream names matching a shell-style wildcard, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_constructor(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under `name`; unknown names raise ValueError listing close matches.

    (A plain ValueError on purpose: `extract.load_upstream_flag` makes it a ConfigError naming the flag.)"""
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown upstream {name!r}{hint}; see `speechrep.list_upstreams()`")
    return _REGISTRY[name]


def list_families() -> list[str]:
    """Names of the exportable model families, sorted."""
    return sorted(_FAMILIES)


def get_family(family: object, source: str) -> type[nn.Module]:
    """The model class registered for `family`; unknown families: one CheckpointError naming `source`."""
    if not isinstance(family, str) or family not in _FAMILIES:
        raise CheckpointError(
            f"{source}: unknown upstream family {family!r} (known: {', '.join(list_families())})"
        )
    return _FAMILIES[family]

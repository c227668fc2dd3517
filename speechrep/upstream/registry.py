"""Name → constructor registry for upstreams (timm style): names are architectures, tags after a dot are weights."""
from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_upstream(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a constructor under `name`; registering a name twice is an error."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"upstream {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_upstreams(pattern: str = "*") -> list[str]:
    """Registered upstream names matching a shell-style wildcard, sorted."""
    _import_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_constructor(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under `name`; unknown names raise ValueError listing close matches."""
    _import_families()
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown upstream {name!r}{hint}; see `speechrep.list_upstreams()`")
    return _REGISTRY[name]


def _import_families() -> None:
    """Import every family module so its @register_upstream decorators run."""
    from speechrep.upstream import families  # noqa: F401

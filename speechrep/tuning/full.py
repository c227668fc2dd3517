"""`full` (`--finetune`): every weight of the upstream trains, at the task's `upstream_lr`."""
from __future__ import annotations

from typing import Any

from torch import nn

from speechrep.tuning.base import ParamGroup


class Full:
    """Fine-tune the whole upstream: it runs live on every batch and the checkpoint saves all of it."""

    name = "full"
    caches_features = False

    def prepare(self, upstream: nn.Module) -> nn.Module:
        """The upstream itself, every parameter trainable."""
        return upstream.requires_grad_(True)

    def parameter_groups(self, prepared: nn.Module, cfg: Any) -> list[ParamGroup]:
        """All of the upstream's parameters at the task's `upstream_lr`."""
        return [{"params": list(prepared.parameters()), "lr": cfg.upstream_lr}]

    def checkpoint_keys(self, prepared: nn.Module) -> list[str]:
        """The whole upstream's state."""
        return list(prepared.state_dict())

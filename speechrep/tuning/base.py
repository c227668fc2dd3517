"""The one interface every tuning strategy follows (a Protocol: strategies compose, nothing to inherit)."""
from __future__ import annotations

from typing import Any, Protocol, TypedDict

from torch import nn


class ParamGroup(TypedDict, total=False):
    """One optimizer parameter group: the parameters and the options that differ from the task's."""

    params: list[nn.Parameter]
    lr: float
    weight_decay: float


class TuningStrategy(Protocol):
    """How a task adapts an upstream.

    `prepare(upstream)` returns the module the downstream model holds in the upstream's place, with the
    upstream's contract (`forward(wavs, wav_lens) -> UpstreamOutput`, `hidden_sizes`, `stride`): a frozen
    upstream wrapped out of the module tree, the upstream itself (full), or the upstream with modules inserted
    and everything else frozen (adapters, LoRA, prompts: they add modules in `prepare` and return only those
    in `parameter_groups` and `checkpoint_keys`). Whatever trains is in the prepared module's parameters with
    `requires_grad`; everything the checkpoint must restore is named by `checkpoint_keys`.
    """

    name: str
    # The upstream's hidden states stay a fixed function of the audio during training: they may be computed
    # once and cached, and one upstream object may serve every run (training never changes it).
    caches_features: bool

    def prepare(self, upstream: nn.Module) -> nn.Module:
        """The module that replaces `upstream` in the downstream model (may modify `upstream` in place)."""
        ...

    def parameter_groups(self, prepared: nn.Module, cfg: Any) -> list[ParamGroup]:
        """The prepared upstream's trainable parameters as optimizer groups (options from the task's cfg)."""
        ...

    def checkpoint_keys(self, prepared: nn.Module) -> list[str]:
        """The keys of `prepared.state_dict()` a run's checkpoint must save (its trained state)."""
        ...

"""What every parameter-efficient strategy shares: a frozen upstream, kept in the module tree, with trained parts.

A strategy (`bitfit`, `houlsby`, `adapterbias`, `lora`, `prefix`, `prompt`) freezes the upstream, marks or
inserts the modules that train, and returns a `TunedUpstream`: the upstream as a submodule (so `.to()` and the
checkpoint reach the inserted modules), held in eval mode like `frozen` (no dropout or layer drop in the weights
that do not train). Its trained parameters train at the task's lr: like the head, they start from zero, from the
frozen model, or (prefixes and prompts) from small random vectors.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.transformer import FeedForward, TransformerLayer
from speechrep.tuning.base import ParamGroup
from speechrep.upstream.base import FrameGeometry, UpstreamOutput
from speechrep.upstream.mockingjay import _PostLNLayer  # Mockingjay, TERA, AudioALBERT: their own BERT layer

# The strategies that need transformer layers (named in the error on an upstream without any).
TRANSFORMER_STRATEGIES = ("adapterbias", "bitfit", "houlsby", "houlsby_parallel", "lora", "prefix", "prompt")


class TunedUpstream(nn.Module):
    """An upstream whose own weights are frozen and in eval mode, with the strategy's trained parts inside it."""

    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.upstream = upstream.eval()
        self.hidden_sizes = list(upstream.hidden_sizes)
        self.stride = int(upstream.stride)
        self.sample_rate = int(getattr(upstream, "sample_rate", 16000))

    @property
    def frame_geometry(self) -> FrameGeometry:
        """The upstream's declared frame geometry (the Upstream contract passes through)."""
        return self.upstream.frame_geometry

    def train(self, mode: bool = True) -> TunedUpstream:
        """Keep the upstream in eval mode whatever the caller's mode (its dropout belongs to the frozen weights)."""
        super().train(mode)
        self.upstream.eval()
        return self

    def forward(self, wavs: Tensor, wav_lens: Tensor, **kwargs: Any) -> UpstreamOutput:
        """The tuned upstream's output (with gradients into the trained parts); `kwargs` (e.g. a compressed
        upstream's `boundaries`) pass through."""
        return self.upstream(wavs, wav_lens, **kwargs)


def transformer_layers(upstream: nn.Module) -> list[nn.Module]:
    """The upstream's transformer layers: `speechrep.nn.transformer`'s, or the Mockingjay family's BERT layers."""
    return [m for m in upstream.modules() if isinstance(m, (TransformerLayer, _PostLNLayer))]


def feed_forwards(upstream: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """(parent, attribute, width) of every transformer layer's FFN: a `FeedForward`, or the `ffn` Sequential of a
    Mockingjay-family layer (shared by all layers in AudioALBERT, so one adapter serves them all)."""
    found = [(m, "ffn", m.ffn.fc2.out_features) for m in upstream.modules()
             if isinstance(m, TransformerLayer) and isinstance(m.ffn, FeedForward)]
    found += [(m, "ffn", m.out.out_features) for m in upstream.modules() if isinstance(m, _PostLNLayer)]
    return found


def require_transformer(upstream: nn.Module, strategy: str) -> None:
    """ConfigError unless `upstream` has transformer layers (the strategies here all act on them)."""
    if not transformer_layers(upstream):
        raise ConfigError(
            f"--tuning {strategy}: {type(upstream).__name__} has no transformer layers; on it use frozen or full "
            f"({', '.join(TRANSFORMER_STRATEGIES)} need a transformer upstream)"
        )


def wrap_feed_forwards(upstream: nn.Module, make: Callable[[nn.Module, int], nn.Module]) -> None:
    """Replace every transformer FFN by `make(ffn, width)` (its input and output width)."""
    for parent, attribute, width in feed_forwards(upstream):
        setattr(parent, attribute, make(getattr(parent, attribute), width))


def replace_modules(root: nn.Module, match: type[nn.Module], make: Callable[[nn.Module], nn.Module],
                    names: tuple[str, ...] | None = None) -> int:
    """Replace every submodule of type `match` (whose attribute name is in `names`, if given) by `make(it)`."""
    targets = [(name, module) for name, module in root.named_modules()
               if isinstance(module, match) and (names is None or name.rsplit(".", 1)[-1] in names)]
    for name, module in targets:
        parent_name, _, attribute = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, attribute, make(module))
    return len(targets)


class InsertingStrategy:
    """The common protocol part: freeze, let `insert` add or mark the trained parameters, wrap, list them."""

    name = ""
    caches_features = False

    def insert(self, upstream: nn.Module) -> None:
        """Add (or unfreeze) the strategy's trained parameters in the frozen `upstream`, in place."""
        raise NotImplementedError

    def prepare(self, upstream: nn.Module) -> nn.Module:
        """The upstream frozen, with the strategy's parts inserted, wrapped as a `TunedUpstream`."""
        require_transformer(upstream, self.name)
        upstream.requires_grad_(False)
        self.insert(upstream)
        return TunedUpstream(upstream)

    def parameter_groups(self, prepared: nn.Module, cfg: Any) -> list[ParamGroup]:
        """The trained parameters, at the task's lr (they start where the frozen model is, like the head)."""
        return [{"params": [p for p in prepared.parameters() if p.requires_grad]}]

    def checkpoint_keys(self, prepared: nn.Module) -> list[str]:
        """Exactly the trained parameters."""
        return [name for name, p in prepared.named_parameters() if p.requires_grad]

"""Reading fairseq checkpoints without fairseq and without running code from them.

fairseq pickles its configuration (omegaconf `DictConfig`, argparse `Namespace`, enums) next to the weights,
so `torch.load(weights_only=True)` refuses the file. `read_fairseq_checkpoint` reads it with an allow-list;
torch's tensor-rebuilding functions and a few containers are real; every other global the file names becomes
an inert stand-in class that only records its arguments and state, and is never imported or called.
"""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from speechrep.errors import CheckpointError


class InertStandIn:
    """Placeholder for a class named in a checkpoint; records constructor arguments, state and items only."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertStandIn":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        """Collect list items of a pickled list subclass."""
        self.items.append(item)

    def extend(self, items: Any) -> None:
        """Collect list items of a pickled list subclass."""
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<stand-in {self.qualified_name}>"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Globals a weights file legitimately needs: tensor/storage rebuilding, dtypes and plain containers."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
    }
    for name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_device_tensor_from_numpy",
    ):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals and replaces all others by inert stand-ins."""

    _stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Return the allow-listed object, else a (cached) stand-in class named after the global."""
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (InertStandIn,), {"qualified_name": f"{module}.{name}"})
        return self._stand_ins[key]


# torch.load calls `pickle_module.Unpickler(...)` and `pickle_module.load(...)`; this stand-in module routes
# both through the restricted unpickler
_restricted_pickle = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler,
    load=lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load(),
    __name__="speechrep_restricted_pickle",
)


def to_plain(obj: Any) -> Any:
    """Turn stand-ins of omegaconf/argparse/enum objects into plain dicts, lists and values."""
    if isinstance(obj, InertStandIn):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (__dict__, __slots__) form
        if isinstance(state, dict):
            if "_content" in state:  # omegaconf DictConfig / ListConfig
                return to_plain(state["_content"])
            if "_val" in state:  # omegaconf value node
                return to_plain(state["_val"])
            return {key: to_plain(value) for key, value in state.items()}
        if obj.items:
            return [to_plain(item) for item in obj.items]
        if len(obj.args) == 1:  # an enum member or a wrapped value
            return to_plain(obj.args[0])
        return None
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(item) for item in obj]
    return obj


def read_restricted(path: Path) -> Any:
    """torch.load through the restricted unpickler: unknown globals become inert stand-ins, no code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({first})") from error


def read_fairseq_checkpoint(path: Path, raw: Any = None) -> dict[str, Any]:
    """Load a fairseq-style .pt safely: returns the top-level dict with configs turned into plain data.

    `raw` is the file's content when the caller has already read it with `read_restricted`."""
    if raw is None:
        raw = read_restricted(path)
    if not isinstance(raw, dict) or "model" not in raw or not isinstance(raw["model"], dict):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict); a plain state dict "
                              "loads with its architecture's name: load_upstream(NAME, checkpoint=PATH)")
    out = {key: (value if key == "model" else to_plain(value)) for key, value in raw.items()}
    bad = [key for key, value in out["model"].items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'model' holds non-tensor entries: {', '.join(map(str, bad[:5]))}")
    return out


def fairseq_model_config(checkpoint: dict[str, Any], path: Path) -> tuple[str, dict[str, Any], bool]:
    """(family, model config, normalize) from a fairseq / WavLM checkpoint's config."""
    cfg, args = checkpoint.get("cfg"), checkpoint.get("args")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model_cfg, task_cfg = cfg["model"], cfg.get("task") or {}
        name = str(model_cfg.get("_name", ""))
        normalize = bool(task_cfg.get("normalize", model_cfg.get("normalize", False)))
    elif isinstance(cfg, dict) and cfg:  # WavLM's release: {"cfg": flat WavLMConfig dict, "model": ...}
        model_cfg, name = cfg, "wavlm" if cfg.get("relative_position_embedding") else "wav2vec2"
        normalize = bool(cfg.get("normalize", False))
    elif isinstance(args, dict) and args:  # older fairseq: an argparse Namespace
        model_cfg, name = args, str(args.get("arch", args.get("_name", "")))
        normalize = bool(args.get("normalize", False))
    else:
        raise CheckpointError(f"{path}: no model configuration ('cfg' or 'args') in the checkpoint")
    families = {"wav2vec2": "wav2vec2", "hubert": "hubert", "data2vec_audio": "data2vec", "wavlm": "wavlm"}
    if name not in families:
        if name.endswith(("_ctc", "_seq2seq")) or "w2v_args" in model_cfg or "w2v_path" in model_cfg:
            raise CheckpointError(
                f"{path}: fine-tuned fairseq model {name!r}; load the pre-trained checkpoint"
            )
        raise CheckpointError(f"{path}: unsupported fairseq model {name!r} (known: {', '.join(families)})")
    family = families[name]
    if family == "wav2vec2" and model_cfg.get("relative_position_embedding"):
        family = "wavlm"
    return family, model_cfg, normalize

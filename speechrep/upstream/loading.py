"""One front door to every upstream: registry names, speechrep exports, Hugging Face dirs, fairseq `.pt`.

Nothing here executes code from a checkpoint: weights come from safetensors, `torch.load(weights_only=True)`
or the restricted unpickler of `speechrep.upstream.fairseq`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from speechrep.errors import CheckpointError, ConfigError
from speechrep.upstream.registry import get_constructor, get_family

EXPORT_FORMAT = "speechrep"
HF_MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec"}


def _config_from_dict(config_class: type, values: Mapping[str, Any], source: str) -> Any:
    """A config dataclass from JSON values; lists become tuples where the default is a tuple."""
    known = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown {config_class.__name__} keys: {', '.join(unknown)}")

    def as_tuple(value: Any) -> Any:
        return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value

    return config_class(**{key: as_tuple(value) for key, value in values.items()})


def _looks_like_path(name_or_path: str | os.PathLike) -> bool:
    """A Path, or a string with a separator, a checkpoint suffix, or naming something that exists."""
    if isinstance(name_or_path, os.PathLike):
        return True
    text = str(name_or_path)
    return (
        "/" in text or os.sep in text or text.endswith((".pt", ".safetensors", ".bin")) or Path(text).exists()
    )


def load_upstream(
    name_or_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, **overrides: Any
) -> nn.Module:
    """Build a registered upstream by name (random weights, or `checkpoint`'s), or load one from a path.

    A path is never taken for a name: a speechrep export directory, a Hugging Face directory (config.json with
    model_type wav2vec2/hubert/wavlm/data2vec-audio) or a fairseq/WavLM `.pt`. `overrides` replace config
    fields (e.g. dropout=0.0). Unknown names raise ValueError; unusable checkpoints raise CheckpointError."""
    if _looks_like_path(name_or_path):
        if checkpoint is not None:
            raise ConfigError("checkpoint= goes with a registered name, not with a path to a model")
        return _load_path(Path(name_or_path), overrides)
    model = get_constructor(str(name_or_path))(**overrides)
    if checkpoint is not None:
        load_weights(model, read_state_dict(Path(checkpoint)), str(checkpoint))
        model.provenance = {"name": str(name_or_path), "checkpoint": str(checkpoint)}
    return model


def _load_path(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """Dispatch a path to the export, Hugging Face or fairseq loader."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{path}: directory has no config.json (expected a speechrep or HF model)")
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{config_path}: not valid JSON ({error})") from error
        if config.get("format") == EXPORT_FORMAT:
            return _load_export(path, config, overrides)
        if "model_type" in config:
            return _load_huggingface(path, config, overrides)
        raise CheckpointError(
            f"{config_path}: neither a speechrep export (format) nor a HF config (model_type)"
        )
    if path.suffix in (".pt", ".ckpt"):
        return _load_fairseq(path, overrides)
    raise CheckpointError(f"{path}: unknown model file type (expected a directory or a fairseq .pt)")


def _build(family: str, config: Any, overrides: Mapping[str, Any], source: str) -> nn.Module:
    """Instantiate `family` with `config` updated by `overrides`."""
    model_class = get_family(family, source)
    try:
        config = dataclasses.replace(config, **overrides)
    except TypeError as error:
        raise ConfigError(f"{source}: bad override ({error})") from error
    return model_class(config)


def _load_export(path: Path, meta: Mapping[str, Any], overrides: Mapping[str, Any]) -> nn.Module:
    """A directory written by `export_upstream`."""
    family = meta.get("family")
    model_class = get_family(family, f"{path}/config.json")
    config = _config_from_dict(model_class.config_class, meta.get("config", {}), f"{path}/config.json")
    model = _build(family, config, overrides, str(path))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: missing model.safetensors")
    load_weights(model, load_file(weights), str(weights))
    model.provenance = dict(meta.get("provenance", {}))
    return model


def _load_huggingface(path: Path, hf_config: Mapping[str, Any], overrides: Mapping[str, Any]) -> nn.Module:
    """A Hugging Face save_pretrained directory of a wav2vec2-family model."""
    from speechrep.upstream.wav2vec2 import config_from_hf, convert_hf_state_dict

    model_type = hf_config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointError(
            f"{path}/config.json: unsupported model_type {model_type!r} "
            f"(supported: {', '.join(HF_MODEL_TYPES)})"
        )
    family = HF_MODEL_TYPES[model_type]
    do_normalize = None
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        do_normalize = bool(json.loads(preprocessor.read_text()).get("do_normalize", False))
    config = config_from_hf(hf_config, get_family(family, str(path)).config_class(), do_normalize)
    model = _build(family, config, overrides, str(path))
    # HF omits masked_spec_embed when the config disables masking; it is used by pre-training only
    load_weights(model, convert_hf_state_dict(_read_hf_weights(path)), str(path), optional=("mask_emb",))
    model.provenance = {"source": str(path), "format": "huggingface", "model_type": model_type}
    return model


def _read_hf_weights(path: Path) -> dict[str, Tensor]:
    """model.safetensors (single or sharded) or pytorch_model.bin via weights_only loading."""
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        return _torch_load_weights_only(path / "pytorch_model.bin")
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def _torch_load_weights_only(path: Path) -> dict[str, Tensor]:
    """torch.load restricted to tensors and plain containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as error:  # torch raises UnpicklingError, RuntimeError or others for unsafe/corrupt files
        raise CheckpointError(
            f"{path}: cannot load with weights_only=True ({str(error).splitlines()[0]})"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_fairseq(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """A fairseq wav2vec 2.0 / HuBERT / data2vec audio checkpoint, or WavLM's own release."""
    from speechrep.upstream.fairseq import fairseq_model_config, read_fairseq_checkpoint
    from speechrep.upstream.wav2vec2 import config_from_fairseq, convert_fairseq_state_dict

    checkpoint = read_fairseq_checkpoint(path)
    family, model_cfg, normalize = fairseq_model_config(checkpoint, path)
    config = config_from_fairseq(model_cfg, get_family(family, str(path)).config_class(), normalize)
    model = _build(family, config, overrides, str(path))
    load_weights(model, convert_fairseq_state_dict(checkpoint["model"]), str(path), optional=("mask_emb",))
    model.provenance = {"source": str(path), "format": "fairseq", "family": family}
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Weights in our key layout from a safetensors file, an export/HF directory or a .pt/.bin file."""
    from speechrep.upstream.wav2vec2 import convert_fairseq_state_dict, convert_hf_state_dict

    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        if meta.get("format") == EXPORT_FORMAT:
            return load_file(path / "model.safetensors")
        return convert_hf_state_dict(_read_hf_weights(path))
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".bin":
        return convert_hf_state_dict(_torch_load_weights_only(path))
    from speechrep.upstream.fairseq import read_fairseq_checkpoint

    return convert_fairseq_state_dict(read_fairseq_checkpoint(path)["model"])


def _name_list(names: list[str], limit: int = 12) -> str:
    """Comma-separated names, truncated with a count."""
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_weights(
    model: nn.Module, state: Mapping[str, Tensor], source: str, optional: tuple[str, ...] = ()
) -> None:
    """Load `state` into `model` exactly; missing, unexpected or mis-shaped names: one CheckpointError.

    Names in `optional` may be absent (they keep their initial values)."""
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state) if k not in optional)
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [
            f"{label}: {_name_list(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if names
        ]
        raise CheckpointError(
            f"{source}: checkpoint does not fit {type(model).__name__}; " + "; ".join(parts)
        )
    model.load_state_dict({key: value.to(own[key].dtype) for key, value in state.items()}, strict=False)


def export_upstream(model: nn.Module, out_dir: str | os.PathLike, provenance: Mapping[str, Any]) -> Path:
    """Write `model` as config.json + model.safetensors into `out_dir` atomically (temp dir, rename)."""
    family, config = getattr(model, "family", None), getattr(model, "config", None)
    if not isinstance(family, str) or not dataclasses.is_dataclass(config):
        raise ConfigError(
            f"{type(model).__name__} cannot be exported: it has no `family` and dataclass `config`"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": EXPORT_FORMAT,
        "family": family,
        "config": dataclasses.asdict(config),
        "provenance": dict(provenance),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""One front door to every upstream: registry names, speechrep exports, Hugging Face dirs, fairseq `.pt`, and
the S3PRL / CPC / MelHuBERT releases of `speechrep.upstream.releases`.

Nothing here executes code from a checkpoint: weights come from safetensors, `torch.load(weights_only=True)`
or the restricted unpickler of `speechrep.upstream.fairseq`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import types
import typing
import zlib
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from speechrep.errors import CheckpointError, ConfigError, SpeechrepError
from speechrep.upstream.registry import get_constructor, get_family

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "speechrep"
HF_MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec"}
# Sanity limits checked before a model is built from a file's config (a corrupt one once asked for 1.2 PB):
MAX_PARAMETERS = 10_000_000_000  # 5x the largest published speech SSL model (XLS-R 2B)
MAX_DIMENSION = 1 << 20  # any single size (width, kernel, buckets, ...)
MAX_LAYERS = 1000  # num_*layers / num_blocks fields
_WARNED_RANDOM: set[str] = set()


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file's tensors; a truncated or corrupt file is one CheckpointError."""
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises SafetensorError, OSError or others on a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt "
                              f"({_first_line(error)})") from error


def _read_config_json(config_path: Path) -> dict[str, Any]:
    """config.json as a dict; invalid JSON or anything but an object is one CheckpointError."""
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config value fits its dataclass annotation (int, float, bool, str, tuples, unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(args) == len(value) and all(_matches(item, arg) for item, arg in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    return True  # an annotation this check does not know: left to the constructor


def _integers(value: Any) -> list[int]:
    """Every int in a (nested tuple) config value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, tuple):
        return [number for item in value for number in _integers(item)]
    return []


def _check_field_types(config_class: type, values: Mapping[str, Any], source: str) -> None:
    """Each value against its field's annotation and the size limits; one ConfigError naming the field."""
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        hint = hints.get(key, Any)
        if not _matches(value, hint):
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            raise ConfigError(f"{source}: {key}={value!r} is not of type {shown}")
        limit = MAX_LAYERS if key.startswith("num_") and key.endswith(("layers", "blocks")) else MAX_DIMENSION
        out_of_range = [number for number in _integers(value) if not 0 <= number <= limit]
        if out_of_range:
            raise ConfigError(f"{source}: {key}={out_of_range[0]} is outside the sane range 0..{limit}")


def _check_model_size(model_class: type, config: Any, source: str) -> None:
    """Build on the meta device (no memory, global RNG untouched) and bound the parameter count."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = model_class(config)
    except SpeechrepError:
        raise
    except Exception as error:  # a config the constructor cannot use: zero heads, negative sizes, ...
        raise ConfigError(f"{source}: cannot build {model_class.__name__} from this config "
                          f"({_first_line(error)})") from error
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{source}: the config describes {count:,} parameters, more than the sane limit "
                          f"{MAX_PARAMETERS:,}")


def _config_from_dict(config_class: type, values: Mapping[str, Any], source: str) -> Any:
    """A config dataclass from JSON values (lists become tuples), each checked against its annotation."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: 'config' must be a JSON object, got {type(values).__name__}")
    known = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown {config_class.__name__} keys: {', '.join(unknown)}")

    def as_tuple(value: Any) -> Any:
        return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value

    values = {key: as_tuple(value) for key, value in values.items()}
    _check_field_types(config_class, values, source)
    try:
        return config_class(**values)
    except SpeechrepError:
        raise
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise ConfigError(f"{source}: unusable {config_class.__name__} ({_first_line(error)})") from error


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


def name_seed(name: str) -> int:
    """A fixed seed derived from an upstream name (the same in every process and on every machine)."""
    return zlib.crc32(name.encode("utf-8"))


def load_upstream_for_inference(
    name_or_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, **overrides: Any
) -> nn.Module:
    """`load_upstream` for user-facing extraction and evaluation (extract, kmeans --features, HEAR, bench).

    A registered name without a checkpoint has random weights: it warns once per name and seeds them from the
    name (`name_seed`), so two processes get the same model; the global RNG is left untouched. Pre-training
    calls `load_upstream`, which initialises from the global RNG as seeded by the run."""
    if checkpoint is not None or _looks_like_path(name_or_path):
        return load_upstream(name_or_path, checkpoint, **overrides)
    name = str(name_or_path)
    constructor = get_constructor(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(name_seed(name))
        model = constructor(**overrides)
    if any(True for _ in model.parameters()) and name not in _WARNED_RANDOM:
        _WARNED_RANDOM.add(name)
        logger.warning("%s: random weights; pass a checkpoint", name)
    return model


def _load_path(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """Dispatch a path to the export, Hugging Face or fairseq loader."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{path}: directory has no config.json (expected a speechrep or HF model)")
        config = _read_config_json(config_path)
        if config.get("format") == EXPORT_FORMAT:
            return _load_export(path, config, overrides)
        if "model_type" in config:
            return _load_huggingface(path, config, overrides)
        raise CheckpointError(
            f"{config_path}: neither a speechrep export (format) nor a HF config (model_type)"
        )
    if path.suffix in (".pt", ".ckpt"):
        return _load_fairseq(path, overrides)
    raise CheckpointError(f"{path}: unknown model file type (expected a directory, a fairseq .pt or a .ckpt)")


def _build(family: str, config: Any, overrides: Mapping[str, Any], source: str) -> nn.Module:
    """Instantiate `family` with `config` updated by `overrides`."""
    model_class = get_family(family, source)
    try:
        config = dataclasses.replace(config, **overrides)
    except TypeError as error:
        raise ConfigError(f"{source}: bad override ({error})") from error
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    _check_field_types(type(config), values, source)
    _check_model_size(model_class, config, source)
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
    load_weights(model, _read_safetensors(weights), str(weights))
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
    try:
        config = config_from_hf(hf_config, get_family(family, str(path)).config_class(), do_normalize)
    except SpeechrepError:
        raise
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
        raise CheckpointError(
            f"{path}/config.json: unusable {model_type} config ({_first_line(error)})"
        ) from error
    model = _build(family, config, overrides, str(path))
    # HF omits masked_spec_embed when the config disables masking; it is used by pre-training only
    load_weights(model, convert_hf_state_dict(_read_hf_weights(path)), str(path), optional=("mask_emb",))
    model.provenance = {"source": str(path), "format": "huggingface", "model_type": model_type}
    return model


def _read_hf_weights(path: Path) -> dict[str, Tensor]:
    """model.safetensors (single or sharded) or pytorch_model.bin via weights_only loading."""
    if (path / "model.safetensors").is_file():
        return _read_safetensors(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(_read_safetensors(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        return _torch_load_weights_only(path / "pytorch_model.bin")
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def _torch_load_weights_only(path: Path) -> dict[str, Tensor]:
    """torch.load restricted to tensors and plain containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError or others for unsafe/corrupt files
        # torch's message advises retrying with weights_only=False, i.e. running the file's code: not repeated
        unsafe = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(error))
        if unsafe or "weights_only" in str(error).lower():
            what = f" (it calls {unsafe.group(1)})" if unsafe else ""
            raise CheckpointError(
                f"{path}: refused: loading it would execute code from the file{what}"
            ) from error
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch state dict ({_first_line(error)})"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_fairseq(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """A fairseq wav2vec 2.0 / HuBERT / data2vec audio checkpoint, WavLM's own release, or one of the
    releases `speechrep.upstream.releases` recognises (S3PRL's, modified CPC, MelHuBERT)."""
    from speechrep.upstream.fairseq import fairseq_model_config, read_fairseq_checkpoint, read_restricted
    from speechrep.upstream.releases import convert_release, detect_release
    from speechrep.upstream.wav2vec2 import config_from_fairseq, convert_fairseq_state_dict

    raw = read_restricted(path)  # no code runs: unknown globals become inert stand-ins
    release = detect_release(raw)
    if release is not None:
        family, config, state = convert_release(raw, release, path)
        model = _build(family, config, overrides, str(path))
        # corpus statistics (MelHuBERT ships them apart) and mask embeddings are not part of these releases
        load_weights(model, state, str(path), optional=("feature_mean", "feature_std", "mask_emb"))
        model.provenance = {"source": str(path), "format": release, "family": family}
        return model
    checkpoint = read_fairseq_checkpoint(path, raw)
    wav2vec_2019 = _fairseq_wav2vec_2019(checkpoint, path)
    if wav2vec_2019 is not None:  # the 2019 wav2vec / vq-wav2vec model, not wav2vec 2.0
        config, state = wav2vec_2019
        model = _build("wav2vec", config, overrides, str(path))
        load_weights(model, state, str(path))
        model.provenance = {"source": str(path), "format": "fairseq", "family": "wav2vec"}
        return model
    family, model_cfg, normalize = fairseq_model_config(checkpoint, path)
    config = config_from_fairseq(model_cfg, get_family(family, str(path)).config_class(), normalize)
    model = _build(family, config, overrides, str(path))
    load_weights(model, convert_fairseq_state_dict(checkpoint["model"]), str(path), optional=("mask_emb",))
    model.provenance = {"source": str(path), "format": "fairseq", "family": family}
    return model


def _fairseq_wav2vec_2019(checkpoint: Mapping[str, Any], path: Path) -> tuple[Any, dict[str, Tensor]] | None:
    """(config, weights in our keys) when a fairseq checkpoint holds the 2019 `wav2vec` model, else None."""
    from speechrep.upstream.wav2vec import from_fairseq, is_fairseq_wav2vec

    cfg, args = checkpoint.get("cfg"), checkpoint.get("args")
    model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
    model_cfg = model_cfg if isinstance(model_cfg, dict) else args
    if not isinstance(model_cfg, dict) or not is_fairseq_wav2vec(model_cfg):
        return None
    return from_fairseq(checkpoint, str(path))


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Weights in our key layout from a safetensors file, an export/HF directory or a .pt/.bin file."""
    from speechrep.upstream.wav2vec2 import convert_fairseq_state_dict, convert_hf_state_dict

    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        meta = _read_config_json(path / "config.json") if (path / "config.json").is_file() else {}
        if meta.get("format") == EXPORT_FORMAT:
            return _read_safetensors(path / "model.safetensors")
        return convert_hf_state_dict(_read_hf_weights(path))
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix == ".bin":
        return convert_hf_state_dict(_torch_load_weights_only(path))
    from speechrep.upstream.fairseq import read_fairseq_checkpoint, read_restricted
    from speechrep.upstream.releases import convert_release, detect_release

    raw = read_restricted(path)  # no code runs: unknown globals become inert stand-ins
    if isinstance(raw, dict) and raw and all(isinstance(v, Tensor) for v in raw.values()):
        return convert_hf_state_dict(raw)  # a plain state dict, whatever the suffix (.pt, .pth), as a .bin
    release = detect_release(raw)
    if release is not None:
        return convert_release(raw, release, path)[2]
    checkpoint = read_fairseq_checkpoint(path, raw)
    wav2vec_2019 = _fairseq_wav2vec_2019(checkpoint, path)
    if wav2vec_2019 is not None:
        return wav2vec_2019[1]
    return convert_fairseq_state_dict(checkpoint["model"])


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
    bad = next((key for key in sorted(state) if state[key].is_floating_point()
                and not bool(torch.isfinite(state[key]).all())), None)
    if bad is not None:
        raise CheckpointError(f"{source}: tensor {bad} holds NaN or Inf values; refusing to load it")
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

"""Typed dataclass configs loaded from YAML, with `key.sub=value` command-line overrides.

A config is a (possibly nested) dataclass. `load_config` fills it from its defaults, then one YAML file or a
list of them (each overlays the previous, mappings merged key by key), then overrides, checking every value
against the field's type. A nested config given as a mapping overlays its parent's default for it. For a
`dict[str, X]` field, `tags.split=dev` sets one entry:

    @dataclass
    class KSConfig:
        upstream: str = "hubert_base"
        layers: list[int] | None = None
        train: TrainConfig = field(default_factory=TrainConfig)

    cfg = load_config(KSConfig, CONFIG_ROOT / "downstream" / "ks.yaml", ["train.lr=1e-4", "layers=[3, 4]"])
    save_config(cfg, run_dir / "config.yaml")

Supported field types: bool, int, float, str, Path, Literal[...], Optional/`X | None`, list[X],
tuple[X, ...], tuple[X, Y], dict[str, X], nested dataclasses and Any. Booleans are only `true`/`false` (YAML
`yes`/`on` are strings here and rejected for a bool field); an int is accepted for a float field, nothing else is
converted. Override values are parsed as YAML scalars or flow lists (`[1, 2]`), except for str/Path fields, whose
text is taken verbatim; `null` sets an Optional field to None. Unknown keys and wrong types raise `ConfigError`
naming the key (and the file). Nothing is ever evaluated as code. A top-level `provenance` mapping (written by
`speechrep.train.prepare_run_dir`) is ignored, so a run's `config.yaml` loads back as its config.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union

import yaml

from speechrep.errors import ConfigError
from speechrep.storage import atomic_write_text

T = TypeVar("T")

# Written by prepare_run_dir next to the config; ignored when loading.
PROVENANCE_KEY = "provenance"
# The YAML defaults shipped inside the package (so a wheel install finds them): downstream/<task>.yaml,
# pretrain/<method>.yaml, preset folders under each, and demo.yaml.
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans and `1e-3` is a float (YAML 1.2 style)."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool",
                                                                        "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Parse YAML text with strict booleans (true/false only) and YAML 1.2 floats (`1e-3`)."""
    return yaml.load(text, Loader=_StrictLoader)


def load_config(cls: type[T], path: Path | Sequence[Path] | None = None, overrides: Sequence[str] = ()) -> T:
    """Build `cls` from its defaults, then the YAML file(s) `path` (each overlays the previous), then overrides."""
    paths = [] if path is None else [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    data: dict[str, Any] = {}
    for p in paths:
        _merge(data, _read_mapping(p))
    source = ", ".join(str(p) for p in paths) or "config"
    for item in overrides:
        _apply_to_dict(cls, data, item)
    try:
        return _build(cls, data, prefix="")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if paths else str(e)) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (provenance removed)."""
    try:
        loaded = parse_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    loaded.pop(PROVENANCE_KEY, None)
    return loaded


def _merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    """Overlay `top` on `base` in place: nested mappings merge key by key, anything else replaces."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def apply_override(cfg: T, item: str) -> T:
    """Return a copy of `cfg` with one `key.sub=value` override applied (value checked against the type)."""
    data = config_to_dict(cfg)
    _apply_to_dict(type(cfg), data, item)
    return _build(type(cfg), data, prefix="")


def _apply_to_dict(cls: type, data: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-4")
    parts = key.split(".")
    for depth, name in enumerate(parts):
        hints = _field_types(cls)
        if name not in hints:
            where = ".".join(parts[:depth]) or "top level"
            raise ConfigError(f"unknown key {key!r} (valid keys at {where}: {', '.join(hints)})")
        tp = hints[name]
        if depth == len(parts) - 1:
            data[name] = _coerce(_parse_override_text(text, tp), tp, key)
            return
        inner = _dataclass_in(tp)
        if inner is None and (typing.get_origin(tp) is dict or tp is dict):
            # A free-form mapping (e.g. hub-model overrides): `model.num_layers=2` sets one entry in it.
            sub = data[name] if name in data else _field_default(cls, name)
            sub = dict(sub) if isinstance(sub, dict) else {}
            data[name] = sub
            for part in parts[depth + 1:-1]:
                sub = sub.setdefault(part, {})
                if not isinstance(sub, dict):
                    raise ConfigError(f"key {key!r}: {part!r} holds {sub!r}, not a mapping")
            sub[parts[-1]] = _parse_override_text(text, Any)
            data[name] = _coerce(data[name], tp, ".".join(parts[:depth + 1]))
            return
        if inner is None:
            raise ConfigError(f"unknown key {key!r}: {'.'.join(parts[:depth + 1])!r} is not a nested config")
        sub = data.get(name)
        if sub is None or dataclasses.is_dataclass(sub):
            sub = config_to_dict(sub) if sub is not None else {}
        if not isinstance(sub, dict):
            raise ConfigError(f"key {'.'.join(parts[:depth + 1])!r}: expected a mapping for {inner.__name__}, "
                              f"got {sub!r}")
        data[name] = sub
        cls, data = inner, sub


def _parse_override_text(text: str, tp: Any) -> Any:
    """str/Path fields take the text verbatim (so `name=123` stays a string); others parse as YAML."""
    options = _union_args(tp) or [tp]
    non_none = [a for a in options if a is not type(None)]
    if len(options) > len(non_none) and text.strip() in ("null", "~", "None"):
        return None
    if non_none and all(a in (str, Path) or _is_str_literal(a) for a in non_none):
        return text
    try:
        return parse_yaml(text)
    except yaml.YAMLError:
        return text  # the type check then reports it against the expected type


def config_to_dict(cfg: Any) -> Any:
    """A plain YAML/JSON-safe copy of a config: dataclasses → dicts, tuples → lists, Paths → strings."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save_config(cfg: Any, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write `cfg` (plus optional extra top-level keys, e.g. provenance) as YAML, atomically."""
    data = config_to_dict(cfg)
    if extra:
        data = {**data, **extra}
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


# ------------------------------------------------------------------------------------- building and typing

def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _build(cls: type[T], data: Any, prefix: str, base: Any = None) -> T:
    """Make `cls` from a mapping; keys it lacks come from `base` (an instance) or else the class defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'top level'}: expected a mapping for {cls.__name__}, "
                          f"got {data!r}")
    hints = _field_types(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise ConfigError(f"unknown key {prefix + str(unknown[0])!r} (valid keys at "
                          f"{prefix.rstrip('.') or 'top level'}: {', '.join(hints)})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = prefix + f.name
        if f.name in data:
            value = data[f.name]
            # A nested config given as a mapping overlays the parent's default for it, not the class defaults.
            inner_base = getattr(base, f.name) if base is not None else _default_instance(f, value)
            kwargs[f.name] = _coerce(value, hints[f.name], key, inner_base)
        elif base is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key!r}")
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def _field_default(cls: type, name: str) -> Any:
    """The default value of field `name` of `cls` (None when it has none)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _default_instance(f: dataclasses.Field, value: Any) -> Any:
    """The field's default when it is a dataclass instance and `value` is a mapping to lay over it."""
    if not isinstance(value, dict):
        return None
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return default if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def _union_args(tp: Any) -> list[Any] | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return list(typing.get_args(tp))
    return None


def _is_str_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp))


def _dataclass_in(tp: Any) -> type | None:
    for a in _union_args(tp) or [tp]:
        if dataclasses.is_dataclass(a):
            return a
    return None


def _type_name(tp: Any) -> str:
    if _union_args(tp):
        return " or ".join(_type_name(a) for a in _union_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, base: Any = None) -> Any:
    """Check `value` against the annotation `tp` and return it in that type, or raise ConfigError.

    `base`: for a nested dataclass given as a mapping, the instance whose values fill the keys it lacks.
    """
    def fail() -> ConfigError:
        return ConfigError(f"key {key!r}: expected {_type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    union = _union_args(tp)
    if union is not None:
        if value is None:
            if type(None) in union:
                return None
            raise fail()
        options = [a for a in union if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the exact item that is wrong
            return _coerce(value, options[0], key, base)
        for option in options:
            try:
                return _coerce(value, option, key, base)
            except ConfigError:
                pass
        raise fail()
    origin = typing.get_origin(tp)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if type(value) is type(choice) and value == choice:
                return choice
        raise fail()
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail()
    if origin in (list, Sequence, typing.Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise fail()
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"key {key!r}: expected {len(args)} items, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail()
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, prefix=key + ".", base=base if isinstance(base, tp) else None)
    raise ConfigError(f"key {key!r}: unsupported field type {tp!r} in the config dataclass")


def list_presets(kind: str) -> dict[str, list[str]]:
    """Preset name → the tasks (kind "downstream") or methods (kind "pretrain") it has files for."""
    root = CONFIG_ROOT / kind
    if not root.is_dir():
        raise ConfigError(f"{root}: no such config folder (kinds: downstream, pretrain)")
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}

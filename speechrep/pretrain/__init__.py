"""Pre-training objectives: one file per SSL method, each trains a hub architecture and exports it.

`METHODS` maps a method name to its module; each module defines `Config` (a dataclass with `data: PretrainData`
and `train: TrainConfig`) and `run(cfg, data, run_dir) -> Path` (the exported upstream directory).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

from speechrep.config import CONFIG_ROOT, config_to_dict, load_config
from speechrep.errors import ConfigError
from speechrep.storage import OutputFolder, disk_errors, forked_children_release_locks
from speechrep.train import seed_everything

METHODS: dict[str, str] = {
    "apc": "speechrep.pretrain.apc",
    "data2vec": "speechrep.pretrain.data2vec",
    "distilhubert": "speechrep.pretrain.distilhubert",
    "hubert": "speechrep.pretrain.hubert",
    "melhubert": "speechrep.pretrain.melhubert",
    "best_rq": "speechrep.pretrain.best_rq",
    "vq_apc": "speechrep.pretrain.vq_apc",
    "npc": "speechrep.pretrain.npc",
    "mockingjay": "speechrep.pretrain.mockingjay",
    "tera": "speechrep.pretrain.tera",
    "audio_albert": "speechrep.pretrain.audio_albert",
    "wav2vec2": "speechrep.pretrain.wav2vec2",
    "cpc": "speechrep.pretrain.cpc",
    "byol_a": "speechrep.pretrain.byol_a",
    "barlow_twins": "speechrep.pretrain.barlow_twins",
    "vicreg": "speechrep.pretrain.vicreg",
    "delores": "speechrep.pretrain.delores",
    "wav2vec": "speechrep.pretrain.wav2vec",
    "vq_wav2vec": "speechrep.pretrain.vq_wav2vec",
    "discrete_bert": "speechrep.pretrain.discrete_bert",
    "wavlm": "speechrep.pretrain.wavlm",
}

CONFIG_DIR = CONFIG_ROOT / "pretrain"


def list_methods() -> list[str]:
    """Names of the pre-training methods, sorted."""
    return sorted(METHODS)


def method_module(method: str) -> Any:
    """The module implementing `method`; unknown names raise ConfigError listing the known ones."""
    if method not in METHODS:
        raise ConfigError(f"unknown pre-training method {method!r}; choose from {', '.join(list_methods())}")
    return importlib.import_module(METHODS[method])


def method_config(method: str, preset: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """The method's config: configs/pretrain/<method>.yaml ← configs/pretrain/<preset>/<method>.yaml ← overrides."""
    module = method_module(method)
    paths = [CONFIG_DIR / f"{method}.yaml"]
    if preset is not None:
        paths.append(CONFIG_DIR / preset / f"{method}.yaml")
        if not paths[-1].is_file():
            presets = sorted(p.parent.name for p in CONFIG_DIR.glob(f"*/{method}.yaml"))
            raise ConfigError(f"{paths[-1]}: no preset {preset!r} for {method} (presets: {', '.join(presets) or 'none'})")
    return load_config(module.Config, paths, overrides)


def run_method(method: str, data: str | Path, run_dir: str | Path, preset: str | None = None,
               overrides: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Pre-train `method` on `data` (a corpus directory or a manifest) into `run_dir`; returns the export.

    `run_dir` is held by this run alone (a second run on it fails at once) and records the method, preset,
    data and overrides that made it: the same call again resumes, a different one is an OutputError unless
    `overwrite` empties the folder and starts over. A resolved config that differs (an edited YAML file) is
    a change too.
    """
    cfg = method_config(method, preset, overrides)
    # The resolved config too, key by key: an edited YAML file changes a run as much as an override does.
    settings = {"method": method, "preset": preset, "data": str(Path(data).resolve()),
                "overrides": list(overrides), **_flatten(config_to_dict(cfg), "config.")}
    forked_children_release_locks()  # data-loader workers must not keep the folder locked after a kill -9
    with OutputFolder(Path(run_dir), "speechrep pretrain", settings, overwrite), disk_errors(run_dir):
        seed_everything(cfg.train.seed)  # the same initial weights on every run (and every rank)
        return method_module(method).run(cfg, Path(data), Path(run_dir))


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, so that a changed setting is named by its own key."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}

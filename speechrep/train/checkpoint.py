"""Checkpoints as plain dicts of tensors, numbers, strings, lists and dicts, written atomically.

Everything in a checkpoint loads with `torch.load(weights_only=True)`, so loading never runs code from the
file. A training checkpoint (see `speechrep.train.loop`) holds: model, optimizer, scheduler, step, epoch,
batch_in_epoch, best_metric, best_step, rng (one entry per rank), config.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechrep.errors import CheckpointError
from speechrep.storage import atomic_write, atomic_write_text


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path` (never a half-written file).

    Serialised in memory first: torch.save reports a full disk as a bare RuntimeError, a plain file write
    as the OSError (ENOSPC) that `disk_errors` turns into one line."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only) onto the CPU; CheckpointError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file cannot be used
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    return checkpoint


def load_checkpoint(path: Path, model: nn.Module | None = None, strict: bool = True) -> dict[str, Any]:
    """Read a checkpoint and, if `model` is given, load its "model" weights into it; returns the dict."""
    checkpoint = read_checkpoint(path)
    if model is not None:
        state = checkpoint.get("model", checkpoint)
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as e:
            first = " ".join(str(e).split())[:300]
            raise CheckpointError(f"{path}: weights do not fit {type(model).__name__} ({first})") from None
    return checkpoint


def capture_rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch (and CUDA) as weights_only-safe tensors and lists."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """Write `run_dir/results.json` atomically (the final numbers of a run, e.g. test metrics)."""
    path = Path(run_dir) / "results.json"
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")

"""The run directory: resolved `config.yaml`, `metrics.jsonl` and TensorBoard scalars.

    run_dir/config.yaml          the fully resolved config + a `provenance` block (seed, versions, git)
    run_dir/checkpoints/         last.pt and best.pt (written by the training loop)
    run_dir/tensorboard/         TensorBoard event files
    run_dir/metrics.jsonl        one JSON object per log / eval event: {"event": ..., "step": ..., ...}
    run_dir/results.json         final numbers (`write_results`)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from speechrep.config import PROVENANCE_KEY, config_to_dict, parse_yaml, save_config
from speechrep.storage import atomic_write_text
from speechrep.train.distributed import is_main_process

log = logging.getLogger(__name__)


def prepare_run_dir(run_dir: Path, config: Any) -> Path:
    """Create `run_dir` and write the resolved `config.yaml` with provenance (rank 0 only); returns run_dir."""
    run_dir = Path(run_dir)
    if not is_main_process():
        return run_dir
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    new = config_to_dict(config)
    if path.is_file():
        old = parse_yaml(path.read_text()) or {}
        old.pop(PROVENANCE_KEY, None)
        changed = _changed_keys(old, new)
        if changed:
            log.warning("%s: config differs from the previous run in this directory at %s", path,
                        ", ".join(changed[:10]))
    provenance = {"seed": _find_seed(config), "versions": package_versions(), "git_revision": git_revision()}
    save_config(config, path, extra={PROVENANCE_KEY: provenance})
    return run_dir


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's numbers."""
    versions = {}
    for name in ("speechrep", "torch", "numpy", "lhotse"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The git commit of the speechrep source tree (+"-dirty" with local changes), or None outside git."""
    source = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


def _find_seed(config: Any) -> int | None:
    """The first `seed` field found in the config, breadth first (usually `train.seed`)."""
    queue = [config]
    while queue:
        obj = queue.pop(0)
        if dataclasses.is_dataclass(obj):
            if isinstance(getattr(obj, "seed", None), int):
                return obj.seed
            queue.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
    return None


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class MetricsLogger:
    """Appends events to `metrics.jsonl` and TensorBoard; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        # Rows and events a killed run wrote after its last checkpoint (all of them if it never saved one) are
        # dropped: the resumed run writes them again, so every curve stays single-valued.
        self._truncate_after(resume_step)
        from torch.utils.tensorboard import SummaryWriter  # slow import; only where logging happens

        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)

    def log(self, event: str, step: int, values: dict[str, float]) -> None:
        """Record one event (e.g. "train" or "eval") at optimizer step `step`."""
        if not self.enabled:
            return
        row = {"event": event, "step": step, **{k: float(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for name, value in values.items():
            self._writer.add_scalar(f"{event}/{name}", float(value), step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _truncate_after(self, step: int) -> None:
        """Drop rows written after the checkpoint we resume from: the resumed run writes them again."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line)["step"] <= step]
        if len(kept) != len(rows):
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events of `run_dir/metrics.jsonl` (only those of type `event` if given); none when it is missing.

    A line that is not a JSON event (a killed run can leave its last line half-written) is skipped with a
    warning, so a run directory can be read while, or after, its run dies.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d: not JSON, skipped", path, number)
            continue
        if isinstance(row, dict) and "step" in row and (event is None or row.get("event") == event):
            events.append(row)
    return events

"""Split one corpus-wide job (feature extraction, k-means labelling) into parts run by separate processes.

    part = resolve_part("1/4")          # --shard 1/4, or `slurm`; under torchrun each rank is a part too
    mine = balance(costs, part.count)[part.index]   # unit indices of this part, by least total cost
    write_done(part_dir, digest, info); ...; with last_part_out(out) as merging: ...

A part is `index/count`. Under `torchrun` with W ranks, `--shard i/n` becomes part `i·W + rank` of `n·W`, so a
SLURM array of torchrun jobs splits the corpus once. Parts are planned by every process alike from the same
inputs and flags (`balance` is deterministic), each writes `OUT/parts/<iiiii>-of-<nnnnn>/` and then its
`done.json` (the plan's digest and what it did). Merging takes `OUT` alone: every part holds `OUT` with a
shared lock while it works, so whoever gets the exclusive lock afterwards knows no part is writing.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError
from speechrep.ranks import rank_and_world
from speechrep.storage import OutputError, OutputLock, atomic_write_json

PARTS_DIR = "parts"
DONE_NAME = "done.json"


@dataclass(frozen=True)
class Part:
    """Part `index` (0-based) of `count`."""

    index: int
    count: int

    @property
    def name(self) -> str:
        """The part's folder name under `OUT/parts/`, e.g. `00001-of-00004` (sorts in order)."""
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_part(text: str, flag: str = "--shard") -> Part:
    """`i/n` (0 <= i < n) or `slurm` (this task of a SLURM job array) → a Part, or one ConfigError line."""
    if text == "slurm":
        task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
        if task is None or count is None:
            raise ConfigError(f"{flag} slurm: not a task of a SLURM job array (no SLURM_ARRAY_TASK_ID/COUNT)")
        index = int(task) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        text = f"{index}/{count}"
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError(f"{flag} {text}: expected i/n with 0 <= i < n (e.g. 0/4), or slurm")
    return Part(int(match[1]), int(match[2]))


def resolve_part(shard: str | None, flag: str = "--shard") -> Part | None:
    """This process's part: `--shard` combined with torchrun's rank and world; None for one process."""
    rank, world = rank_and_world()
    part = parse_part(shard, flag) if shard else None
    if world <= 1:
        return part
    outer = part or Part(0, 1)
    return Part(outer.index * world + rank, outer.count * world)


def balance(costs: Sequence[float], count: int) -> list[list[int]]:
    """Unit indices per part: longest first to the least loaded part (ties: lowest index), each in order."""
    loads = [(0.0, part) for part in range(count)]
    parts: list[list[int]] = [[] for _ in range(count)]
    for unit in sorted(range(len(costs)), key=lambda i: -costs[i]):  # stable: equal costs keep their order
        load, part = heapq.heappop(loads)
        parts[part].append(unit)
        heapq.heappush(loads, (load + costs[unit], part))
    return [sorted(units) for units in parts]


def digest(*items: Any) -> str:
    """A 16-hex-digit hash of JSON-serialisable `items`: what every part must agree on."""
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def part_folder(out: Path, part: Part) -> Path:
    """`OUT/parts/<part.name>`."""
    return Path(out) / PARTS_DIR / part.name


def write_done(folder: Path, plan: str, info: dict[str, Any]) -> None:
    """Mark a part finished: its plan digest and `info` (what it did), written atomically."""
    atomic_write_json(Path(folder) / DONE_NAME, dict(info, plan=plan))


def read_done(folder: Path) -> dict[str, Any] | None:
    """A part's done record, or None while it is not finished."""
    try:
        return json.loads((Path(folder) / DONE_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def missing_parts(out: Path, count: int, plan: str | None = None) -> list[int]:
    """Indices of the parts of `count` without a done record (of plan `plan`, when given)."""
    missing = []
    for index in range(count):
        done = read_done(part_folder(out, Part(index, count)))
        if done is None or (plan is not None and done.get("plan") != plan):
            missing.append(index)
    return missing


def part_folders(out: Path) -> list[Path]:
    """Every part folder under `OUT/parts/`, in name order."""
    parts = Path(out) / PARTS_DIR
    return sorted(p for p in parts.iterdir() if p.is_dir()) if parts.is_dir() else []


@contextlib.contextmanager
def exclusive_or_none(out: Path, what: str) -> Iterator[bool]:
    """Hold `out` alone if nobody else holds it (True), else do nothing (False): the last part merges."""
    lock = OutputLock(Path(out), what, every_rank=True)
    try:
        lock.acquire()
    except OutputError:
        yield False  # another part still works (it merges when it finishes) or a merge is under way
        return
    try:
        yield True
    finally:
        lock.release()

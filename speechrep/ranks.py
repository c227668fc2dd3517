"""Which DDP rank this process is, and its device, asked of torch.distributed or torchrun's environment.

It sits below `data` (which shards batches by rank), `upstream` (which picks a device for extraction) and
`train` (which joins the process group), so that none of them imports another.

Under SLURM's `srun` (one task per GPU, no torchrun) the ranks come from SLURM's task variables: importing
this module (every `import speechrep` does) exports torchrun's RANK / WORLD_SIZE / LOCAL_RANK and, if unset,
MASTER_ADDR (the first node of the job) / MASTER_PORT (from the job id) from them, so that every reader of
those variables (data sharding, output locks, `init_process_group`) sees the same ranks. Variables torchrun
set always win.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) when not started by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """The rank of this process on its machine (torchrun's LOCAL_RANK), 0 when single-process."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def slurm_ranks(environ: Mapping[str, str]) -> tuple[int, int, int] | None:
    """(global rank, world size, local rank) of an `srun` task from SLURM_PROCID, SLURM_STEP_NUM_TASKS (else
    SLURM_NTASKS) and SLURM_LOCALID; None when torchrun's RANK or WORLD_SIZE is set or SLURM_PROCID is not."""
    if "RANK" in environ or "WORLD_SIZE" in environ or "SLURM_PROCID" not in environ:
        return None
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    try:
        rank, world, local = int(environ["SLURM_PROCID"]), int(tasks), int(environ.get("SLURM_LOCALID", "0"))
    except ValueError:
        raise ValueError(f"SLURM task variables are not integers: SLURM_PROCID={environ['SLURM_PROCID']!r}, "
                         f"tasks={tasks!r}, SLURM_LOCALID={environ.get('SLURM_LOCALID')!r}") from None
    if not 0 <= rank < world or local < 0:
        raise ValueError(f"SLURM_PROCID={rank} is not a task of {world} (or SLURM_LOCALID={local} < 0)")
    return rank, world, local


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist: "gpu[03-05,09],cpu1" -> "gpu03"; "r[1-2]-n[7,9]" -> "r1-n7"."""
    depth, first = 0, nodelist
    for i, char in enumerate(nodelist):  # the first comma outside brackets ends the first entry
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            first = nodelist[:i]
            break
    host = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], first.strip())
    if not host or "[" in host or "]" in host:
        raise ValueError(f"SLURM node list {nodelist!r}: cannot read its first host")
    return host


def adopt_slurm_environment(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Export torchrun's variables from SLURM's for an `srun` task (module docstring); True if done."""
    ranks = slurm_ranks(environ)
    if ranks is None:
        return False
    rank, world, local = ranks
    environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
    if world > 1 and "MASTER_ADDR" not in environ:
        nodelist = (environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
                    or environ.get("SLURM_NODELIST"))
        if not nodelist:
            raise ValueError("SLURM task without MASTER_ADDR or SLURM_JOB_NODELIST: no rank-0 host to join")
        environ["MASTER_ADDR"] = first_slurm_host(nodelist)
    if world > 1 and "MASTER_PORT" not in environ:  # the same on every task of a job, different across jobs
        environ["MASTER_PORT"] = str(15000 + int(environ.get("SLURM_JOB_ID", "0") or 0) % 20000)
    return True


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" to a device; under torchrun on GPUs, the GPU of this local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is available")
        # a task bound to its own GPU(s) (SLURM --gpus-per-task, CUDA_VISIBLE_DEVICES) sees fewer devices
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device(name)


adopt_slurm_environment()

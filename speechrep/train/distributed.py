"""Process-group helpers for runs under `torchrun` (DistributedDataParallel; gloo on CPU, NCCL on GPU).

Recipes shard their data by `rank_and_world()` before calling `train`; these helpers work before the process
group exists (they read torchrun's RANK / WORLD_SIZE / LOCAL_RANK environment variables) and after.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from speechrep.ranks import local_rank, rank_and_world, resolve_device  # noqa: F401 (re-exported for recipes)


def is_main_process() -> bool:
    """True on the process that logs and saves (rank 0)."""
    return rank_and_world()[0] == 0


def init_distributed(device: torch.device) -> bool:
    """Join the torchrun process group (NCCL on CUDA, else gloo) if WORLD_SIZE > 1; True when distributed."""
    _, world = rank_and_world()
    if world <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def finish_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

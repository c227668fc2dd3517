"""Process-group helpers for runs under `torchrun` (DistributedDataParallel; gloo on CPU, NCCL on GPU).

Recipes shard their data by `rank_and_world()` before calling `train`; these helpers work before the process
group exists (they read torchrun's RANK / WORLD_SIZE / LOCAL_RANK environment variables) and after.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from speechrep.ranks import rank_and_world  # re-exported: recipes import it from here


def is_main_process() -> bool:
    """True on the process that logs and saves (rank 0)."""
    return rank_and_world()[0] == 0


def local_rank() -> int:
    """The rank of this process on its machine (torchrun's LOCAL_RANK), 0 when single-process."""
    return int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" to a device; under torchrun on GPUs, the GPU of this local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", local_rank())
    return torch.device(name)


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

"""Which DDP rank this process is, and its device, asked of torch.distributed or torchrun's environment.

It sits below `data` (which shards batches by rank), `upstream` (which picks a device for extraction) and
`train` (which joins the process group), so that none of them imports another.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) when not started by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


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

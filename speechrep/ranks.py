"""Which DDP rank this process is, asked of torch.distributed or torchrun's environment.

It sits below both `data` (which shards batches by rank) and `train` (which joins the process group), so that
neither imports the other.
"""
from __future__ import annotations

import os

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) when not started by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

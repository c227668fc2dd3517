"""Learning-rate schedules: linear warm-up, then linear / cosine decay to zero, or constant."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("linear", "cosine", "constant")


def lr_factor(step: int, max_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base LR for the optimizer step number `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (valid: {', '.join(SCHEDULES)})")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, warmup_steps: int,
                   schedule: str) -> LambdaLR:
    """A LambdaLR applying `lr_factor` to every parameter group's own base LR."""
    lr_factor(0, max_steps, warmup_steps, schedule)  # validates the schedule name now, not at step 1

    def factor(step: int) -> float:
        return lr_factor(step, max_steps, warmup_steps, schedule)

    fn: Callable[[int], float] = factor
    return LambdaLR(optimizer, fn)

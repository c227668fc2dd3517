"""A toy regression trained by `speechrep.train.train`; run under `torchrun` by tests/test_train_ddp.py.

Usage: torchrun --standalone --nproc_per_node N tests/ddp_toy.py RUN_DIR OUT.pt [KILL_AT_STEP]
Every rank takes its slice of each global batch of 8; rank 0 writes the final weights to OUT.pt. With
KILL_AT_STEP, the first training call is stopped after that step and the same call is made again (resume).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from torch import nn

from speechrep.train import TrainConfig, finish_distributed, is_main_process, rank_and_world, train

GLOBAL_BATCH = 8


def toy_model() -> nn.Module:
    """Same initial weights on every rank and in the single-process run."""
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


class Stop(Exception):
    """Stands in for a killed job."""


def toy_config() -> TrainConfig:
    """Six steps of two micro-batches, checkpoints at steps 3 and 6."""
    return TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, grad_accum=2, clip_norm=0.5, eval_every=3,
                       log_every=1, device="cpu", weight_decay=0.01)


def run(run_dir: Path, kill_at: int | None = None) -> nn.Module:
    """Train the toy model on this process's shard of the data; returns the trained (unwrapped) model."""
    x = torch.randn(48, 6, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1).sin()
    rank, world = rank_and_world()

    def batches(epoch: int):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), GLOBAL_BATCH):
            idx = order[i:i + GLOBAL_BATCH][rank::world]
            yield x[idx], y[idx]

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return ((model(inputs).squeeze(1) - targets) ** 2).mean()

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"loss": loss_fn(model, (x[:16], y[:16])).item()}

    def after_step(model: nn.Module, step: int) -> None:
        if step == kill_at:
            raise Stop

    model = toy_model()
    train(model, batches, loss_fn, toy_config(), run_dir, evaluate=evaluate, after_step=after_step)
    return model


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) > 3:
        try:
            run(Path(sys.argv[1]), kill_at=int(sys.argv[3]))
        except Stop:
            pass
    trained = run(Path(sys.argv[1]))
    if is_main_process():
        torch.save(trained.state_dict(), sys.argv[2])
    finish_distributed()

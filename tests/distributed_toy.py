"""A toy model with a layer list, trained by `speechrep.train.train`; run under torchrun by
tests/test_distributed_training.py to compare DDP, FSDP2 and one process.

Usage: torchrun ... tests/distributed_toy.py RUN_DIR OUT.pt PARALLEL [KILL_AT_STEP [RESUME_PARALLEL]]
Every rank takes its slice of each global batch of 8; rank 0 writes the final weights to OUT.pt. With
KILL_AT_STEP, the first training call (PARALLEL) stops after that step and the run is resumed by a second call
(RESUME_PARALLEL, default PARALLEL). Odd widths make FSDP2 shards uneven.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import torch
from torch import nn

from speechrep.train import TrainConfig, finish_distributed, is_main_process, rank_and_world, train

GLOBAL_BATCH = 8


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 15)
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(15, 15), nn.Tanh()) for _ in range(3)])
        self.out = nn.Linear(15, 1)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.out(x)


def toy_model() -> nn.Module:
    """Same initial weights on every rank and in the single-process run."""
    torch.manual_seed(5)
    return Toy()


class Stop(Exception):
    """Stands in for a killed job."""


def toy_config() -> TrainConfig:
    """Six steps of two micro-batches, checkpoints at steps 3 and 6."""
    return TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, grad_accum=2, clip_norm=0.5, eval_every=3,
                       log_every=1, device="cpu", weight_decay=0.01)


def run(run_dir: Path, parallel: str = "ddp", kill_at: int | None = None) -> nn.Module:
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
        return {"loss": ((model(x[:16]).squeeze(1) - y[:16]) ** 2).mean().item()}

    def after_step(model: nn.Module, step: int) -> None:
        model.updates.fill_(step)
        if step == kill_at:
            raise Stop

    model = toy_model()
    cfg = dataclasses.replace(toy_config(), parallel=parallel)
    train(model, batches, loss_fn, cfg, run_dir, evaluate=evaluate, after_step=after_step)
    return model


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_dir, out, parallel = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if len(sys.argv) > 4:
        try:
            run(run_dir, parallel, kill_at=int(sys.argv[4]))
        except Stop:
            pass
        parallel = sys.argv[5] if len(sys.argv) > 5 else parallel
    trained = run(run_dir, parallel)
    if is_main_process():
        torch.save(trained.state_dict(), out)
    finish_distributed()

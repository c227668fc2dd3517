"""Helpers of the generative pre-training tests: the synthetic `unlabeled` subset, a batch, overfitting."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechrep.data.batching import AudioBatch, audio_batches, load_cuts
from speechrep.data.synth import make_synthetic_corpus


def unlabeled_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `micro` synthetic corpus (seed 0), `unlabeled` subset only, built once per session and reused."""
    root = tmp_path_factory.getbasetemp() / "synth_micro_unlabeled"
    make_synthetic_corpus(root, preset="micro", seed=0, subsets=["unlabeled"], num_workers=1)
    return root


def first_batch(corpus: Path, max_duration: float = 8.0) -> AudioBatch:
    """The first (unshuffled) training batch of the corpus, for overfitting tests."""
    return next(iter(audio_batches(load_cuts(corpus, "unlabeled", "train"), max_duration, shuffle=False)(0)))


def overfit(objective: torch.nn.Module, batch: AudioBatch, steps: int, lr: float = 3e-3) -> list[float]:
    """Train `objective` on one batch with Adam for `steps` steps (global RNG seeded); the losses."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(objective.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def fixed_loss(objective: torch.nn.Module, batch: AudioBatch, seed: int = 123) -> float:
    """The eval-mode loss on `batch` with fixed (seeded) masks/codes; the training RNG is left untouched."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        objective.eval()
        loss = float(objective(batch)[0])
        objective.train()
    return loss


def loss_before_and_after(objective: torch.nn.Module, batch: AudioBatch,
                          steps: int = 40) -> tuple[float, float]:
    """Fixed-mask loss on `batch` before and after overfitting it for `steps` steps."""
    before = fixed_loss(objective, batch)
    overfit(objective, batch, steps)
    return before, fixed_loss(objective, batch)

"""SID, speaker identification (SUPERB; VoxCeleb1, 1251 speakers): mean-pool + linear, accuracy.

Labels: `speaker` of each cut's supervision; the same speakers appear in every split (closed set).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import MeanPoolLinear
from speechrep.downstream.metrics import accuracy
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.train import TrainConfig


@dataclass
class SIDConfig:
    """SUPERB SID: AdamW lr 1e-4, batch 8 utterances (about 8 s each), 200k steps, dev every 5k."""

    subset: str = "sid"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # only with --finetune
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=5000, log_every=500))


def class_targets(batch: FeatureBatch, classes: dict[str, int], device: torch.device) -> torch.Tensor:
    """(B,) class ids of the batch's speakers; a speaker unseen in training gets -1 (always wrong)."""
    return torch.tensor([classes.get(cut_label(c, "speaker"), -1) for c in batch.cuts], device=device)


def build(cfg: SIDConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Speaker classes from the train split, a mean-pool + linear head, cross-entropy, accuracy."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    classes = {k: i for i, k in enumerate(sorted({cut_label(c, "speaker") for c in train_cuts}))}
    head = MeanPoolLinear(features.hidden_size, len(classes), cfg.projection_size)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, _ = model(batch)
        return F.cross_entropy(logits, class_targets(batch, classes, logits.device))

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        predictions, targets = [], []
        for batch in batches:
            logits, _ = model(batch)
            predictions.append(logits.argmax(-1).cpu())
            targets.append(class_targets(batch, classes, torch.device("cpu")))
        return {"accuracy": accuracy(torch.cat(predictions), torch.cat(targets))}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="sid", config=SIDConfig, build=build, metric="accuracy", higher_is_better=True,
                best_value=1.0)

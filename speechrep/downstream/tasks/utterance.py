"""Utterance classification shared by KS, SID and ER: mean-pool + linear head, cross-entropy, accuracy.

Each task file keeps its own config, data and splits, and calls `utterance_classification` with the label it
classifies (`keyword`, `speaker`, `emotion`).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from lhotse import CutSet
from torch import nn

from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import MeanPoolLinear
from speechrep.downstream.metrics import accuracy
from speechrep.downstream.tasks import TaskParts, cut_label


def class_targets(batch: FeatureBatch, label: str, classes: dict[str, int],
                  device: torch.device) -> torch.Tensor:
    """(B,) class ids of the batch's `label` values; a value unseen in training gets -1 (always wrong)."""
    return torch.tensor([classes.get(cut_label(c, label), -1) for c in batch.cuts], device=device)


def utterance_classification(label: str, projection_size: int, features: FeatureSource, train_cuts: CutSet,
                             dev_cuts: CutSet, load_test: Callable[[], CutSet]) -> TaskParts:
    """Classes of `label` from the train cuts, a mean-pool + linear head, cross-entropy, accuracy."""
    classes = {k: i for i, k in enumerate(sorted({cut_label(c, label) for c in train_cuts}))}
    head = MeanPoolLinear(features.hidden_size, len(classes), projection_size)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, _ = model(batch)
        return F.cross_entropy(logits, class_targets(batch, label, classes, logits.device))

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        predictions, targets = [], []
        for batch in batches:
            logits, _ = model(batch)
            predictions.append(logits.argmax(-1).cpu())
            targets.append(class_targets(batch, label, classes, torch.device("cpu")))
        return {"accuracy": accuracy(torch.cat(predictions), torch.cat(targets))}

    return TaskParts(head, train_cuts, dev_cuts, load_test, loss_fn, evaluate)

"""Classification accuracy for utterance-level (KS, SID, ER, IC) and frame-level (PF) tasks."""
from __future__ import annotations

import torch
from torch import Tensor

from speechrep.errors import SpeechrepError


def _check_shapes(predictions: Tensor, targets: Tensor) -> None:
    if predictions.shape != targets.shape:
        raise SpeechrepError(
            f"accuracy: predictions {tuple(predictions.shape)} vs targets {tuple(targets.shape)}"
        )


def accuracy(predictions: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of elements where prediction equals target; `mask` (bool, same shape) selects scored ones."""
    _check_shapes(predictions, targets)
    correct = predictions == targets
    if mask is not None:
        correct = correct[mask.bool()]
    if correct.numel() == 0:
        raise SpeechrepError("accuracy: nothing to score")
    return correct.to(torch.float64).mean().item()


def all_slots_accuracy(predictions: Tensor, targets: Tensor) -> float:
    """IC accuracy on (N, num_slots) labels: an utterance is right only when every slot is right (SUPERB)."""
    _check_shapes(predictions, targets)
    if predictions.dim() != 2:
        raise SpeechrepError(f"all_slots_accuracy: expected (N, num_slots), got {tuple(predictions.shape)}")
    return accuracy((predictions == targets).all(dim=1), torch.ones(len(targets), dtype=torch.bool))

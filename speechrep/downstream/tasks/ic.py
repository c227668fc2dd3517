"""IC, intent classification (SUPERB; Fluent Speech Commands): mean-pool + one linear softmax per slot.

Labels: `custom["intent"]`, a mapping slot → value (action, object, location). Accuracy counts an utterance as
right only when every slot is right (SUPERB's IC accuracy).
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
from speechrep.downstream.metrics import all_slots_accuracy
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig


@dataclass
class ICConfig:
    """SUPERB IC: AdamW lr 1e-4, batch 32 utterances, 200k steps, dev every 5k."""

    subset: str = "ic"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 80.0  # seconds of audio per batch (about 32 commands)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=5000, log_every=500))


def intent_of(cut) -> dict[str, str]:  # noqa: ANN001 - a lhotse cut
    """The slot → value mapping of a cut."""
    intent = cut_label(cut, "intent")
    if not isinstance(intent, dict) or not intent:
        raise SpeechrepError(f"cut {cut.id!r}: custom['intent'] must be a mapping slot -> value, "
                             f"got {intent!r}")
    return intent


def slot_targets(batch: FeatureBatch, slots: dict[str, dict[str, int]], device: torch.device) -> torch.Tensor:
    """(B, num_slots) value ids; a value unseen in training gets -1 (always wrong)."""
    rows = []
    for cut in batch.cuts:
        intent = intent_of(cut)
        rows.append([values.get(str(intent.get(slot)), -1) for slot, values in slots.items()])
    return torch.tensor(rows, dtype=torch.long, device=device)


def build(cfg: ICConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Slot values from the train split, a mean-pool head with one classifier per slot, summed losses."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    intents = [intent_of(c) for c in train_cuts]
    slot_names = sorted({slot for intent in intents for slot in intent})
    slots = {s: {v: i for i, v in enumerate(sorted({str(it[s]) for it in intents if s in it}))}
             for s in slot_names}
    head = MeanPoolLinear(features.hidden_size, [len(v) for v in slots.values()], cfg.projection_size)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, _ = model(batch)
        targets = slot_targets(batch, slots, logits[0].device)
        losses = [F.cross_entropy(lg, targets[:, k]) for k, lg in enumerate(logits)]
        return sum(losses), {f"loss_{name}": float(x.detach()) for name, x in zip(slots, losses)}

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        predictions, targets = [], []
        for batch in batches:
            logits, _ = model(batch)
            predictions.append(torch.stack([lg.argmax(-1) for lg in logits], dim=1).cpu())
            targets.append(slot_targets(batch, slots, torch.device("cpu")))
        pred, gold = torch.cat(predictions), torch.cat(targets)
        slot_acc = {f"accuracy_{name}": float((pred[:, k] == gold[:, k]).double().mean()) for k, name in
                    enumerate(slots)}
        return {"accuracy": all_slots_accuracy(pred, gold), **slot_acc}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="ic", config=ICConfig, build=build, metric="accuracy", higher_is_better=True,
                best_value=1.0)

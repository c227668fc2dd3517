"""Irony (issue 17; Lin et al., SLT 2022): a compliment said sincerely or with exaggerated irony.

Labels: `custom["irony"]` (sincere, ironic) of the synthetic `irony` subset, where every sentence is spoken
both ways with the same words (`speechrep.data.synth.prosodic`), so the words alone are at chance.
Mean-pool + linear on the learned weighted sum of layers, cross-entropy, accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.downstream.tasks.utterance import utterance_classification
from speechrep.train import TrainConfig


@dataclass
class IronyConfig:
    """SUPERB's utterance-level recipe (as ER's): AdamW lr 1e-4, about 32 utterances per batch, 30k steps."""

    subset: str = "irony"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch (about 32 two-second sentences)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=30_000, lr=1e-4, schedule="constant", eval_every=1000, log_every=100))


def build(cfg: IronyConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Sincere and ironic classes from the train split, a mean-pool + linear head, cross-entropy, accuracy."""
    return utterance_classification("irony", cfg.projection_size, features,
                                    load_cuts(corpus_dir, cfg.subset, "train"),
                                    load_cuts(corpus_dir, cfg.subset, "dev"),
                                    lambda: load_cuts(corpus_dir, cfg.subset, "test"))


TASK = TaskSpec(name="irony", config=IronyConfig, build=build, metric="accuracy",
                higher_is_better=True, best_value=1.0)

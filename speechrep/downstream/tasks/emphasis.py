"""Emphasis position (issue 17; Lin et al., SLT 2022): which of the first three words is emphasised.

Labels: `custom["emphasis"]` (1, 2 or 3) of the synthetic `emphasis` subset, where every sentence is spoken
with each of the three emphases and the same words (`speechrep.data.synth.prosodic`), so the words alone are
at chance.
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
class EmphasisConfig:
    """SUPERB's utterance-level recipe (as ER's): AdamW lr 1e-4, about 32 utterances per batch, 30k steps."""

    subset: str = "emphasis"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch (about 32 two-second sentences)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=30_000, lr=1e-4, schedule="constant", eval_every=1000, log_every=100))


def build(cfg: EmphasisConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Emphasised-word classes from the train split, a mean-pool + linear head, cross-entropy, accuracy."""
    return utterance_classification("emphasis", cfg.projection_size, features,
                                    load_cuts(corpus_dir, cfg.subset, "train"),
                                    load_cuts(corpus_dir, cfg.subset, "dev"),
                                    lambda: load_cuts(corpus_dir, cfg.subset, "test"))


TASK = TaskSpec(name="emphasis", config=EmphasisConfig, build=build, metric="accuracy",
                higher_is_better=True, best_value=1.0)

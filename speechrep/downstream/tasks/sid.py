"""SID, speaker identification (SUPERB; VoxCeleb1, 1251 speakers): mean-pool + linear, accuracy.

Labels: `speaker` of each cut's supervision; the same speakers appear in every split (closed set).
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
class SIDConfig:
    """SUPERB SID: AdamW lr 1e-4, batch 8 utterances (about 8 s each), 200k steps, dev every 5k."""

    subset: str = "sid"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=5000, log_every=500))


def build(cfg: SIDConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Speaker classes from the train split, a mean-pool + linear head, cross-entropy, accuracy."""
    return utterance_classification("speaker", cfg.projection_size, features,
                                    load_cuts(corpus_dir, cfg.subset, "train"),
                                    load_cuts(corpus_dir, cfg.subset, "dev"),
                                    lambda: load_cuts(corpus_dir, cfg.subset, "test"))


TASK = TaskSpec(name="sid", config=SIDConfig, build=build, metric="accuracy", higher_is_better=True,
                best_value=1.0)

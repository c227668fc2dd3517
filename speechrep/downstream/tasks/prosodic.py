"""What the prosody-intensive utterance tasks (`sentence_type`, `emphasis`, `irony`; issue 17, Lin et al.,
SLT 2022) share: one config and one build. Each task classifies the cut label named like itself, on the
synthetic subset of that name (`speechrep.data.synth.prosodic`), with a mean-pool + linear head on the learned
weighted sum of layers, cross-entropy and accuracy. The task files keep their docstring, their config's subset
and their `TASK`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.downstream.tasks.utterance import utterance_classification
from speechrep.train import TrainConfig


@dataclass
class ProsodicClassConfig:
    """SUPERB's utterance-level recipe (as ER's): AdamW lr 1e-4, about 32 utterances per batch, 30k steps."""

    subset: str = ""  # each task's config names its subset
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch (about 32 two-second sentences)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=30_000, lr=1e-4, schedule="constant", eval_every=1000, log_every=100))


def prosodic_task(name: str, config: type[ProsodicClassConfig]) -> TaskSpec:
    """The TaskSpec of a prosodic classification task: the classes of the cut label `name`, accuracy."""

    def build(cfg: Any, corpus_dir: Path, features: FeatureSource) -> TaskParts:
        return utterance_classification(name, cfg.projection_size, features,
                                        load_cuts(corpus_dir, cfg.subset, "train"),
                                        load_cuts(corpus_dir, cfg.subset, "dev"),
                                        lambda: load_cuts(corpus_dir, cfg.subset, "test"))

    return TaskSpec(name=name, config=config, build=build, metric="accuracy", higher_is_better=True,
                    best_value=1.0)

"""ER, emotion recognition (SUPERB; IEMOCAP, 4 classes): mean-pool + linear, accuracy, mean over 5 folds.

Labels: `custom["emotion"]` and `custom["fold"]` (IEMOCAP session, or the synthetic corpus's speaker group).
Cross-validation re-splits the whole subset by fold: run `fold<k>` tests on the cuts of fold k, selects on
the cuts of the next fold (cyclically, speaker-disjoint like the test fold) and trains on every other fold.
`folds: [1]` runs one fold only (quick runs). The runner averages dev and test over the folds.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lhotse import CutSet

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.downstream.tasks.utterance import utterance_classification
from speechrep.errors import ConfigError
from speechrep.train import TrainConfig

SPLITS = ("train", "dev", "test")


@dataclass
class ERConfig:
    """SUPERB ER: AdamW lr 1e-4, batch 32 utterances, 30k steps, dev every 1k, 5-fold cross-validation."""

    subset: str = "er"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 150.0  # seconds of audio per batch (about 32 utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    projection_size: int = 256
    folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # test folds to run (one run each)
    test_fold: int = 1  # set per run by `sub_runs`
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=30_000, lr=1e-4, schedule="constant", eval_every=1000, log_every=100))


def sub_runs(cfg: ERConfig) -> dict[str, ERConfig]:
    """One run per test fold."""
    if not cfg.folds or len(set(cfg.folds)) != len(cfg.folds):
        raise ConfigError(f"key 'folds': expected distinct fold numbers, got {cfg.folds}")
    return {f"fold{k}": replace(cfg, test_fold=k) for k in cfg.folds}


def _fold_of(cut) -> int:  # noqa: ANN001 - a lhotse cut
    return int(cut_label(cut, "fold"))


def split_by_fold(cuts: CutSet, test_fold: int) -> tuple[CutSet, CutSet, CutSet]:
    """(train, dev, test): test = `test_fold`, dev = the next fold present (cyclically), train = the rest."""
    folds = sorted({_fold_of(c) for c in cuts})
    if test_fold not in folds or len(folds) < 3:
        raise ConfigError(f"ER: test fold {test_fold} needs at least 3 folds in the corpus, found {folds}")
    dev_fold = folds[(folds.index(test_fold) + 1) % len(folds)]
    pick = lambda keep: cuts.filter(lambda c: keep(_fold_of(c))).to_eager()  # noqa: E731
    return (pick(lambda f: f not in (test_fold, dev_fold)), pick(lambda f: f == dev_fold),
            pick(lambda f: f == test_fold))


def build(cfg: ERConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Fold split, emotion classes from its train part, a mean-pool + linear head, cross-entropy, accuracy."""
    pool = CutSet.from_cuts(c for split in SPLITS for c in load_cuts(corpus_dir, cfg.subset, split))
    train_cuts, dev_cuts, test_cuts = split_by_fold(pool, cfg.test_fold)
    return utterance_classification("emotion", cfg.projection_size, features, train_cuts, dev_cuts,
                                    lambda: test_cuts)


TASK = TaskSpec(name="er", config=ERConfig, build=build, metric="accuracy", higher_is_better=True,
                best_value=1.0, sub_runs=sub_runs)

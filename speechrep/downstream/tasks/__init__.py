"""SUPERB downstream tasks: the interface every task file implements, and the registry name → task.

A task is one file in this folder that reads top to bottom: config dataclass, data, head, loss, metric, and
at the bottom one `TASK = TaskSpec(...)`. It knows nothing about upstreams, checkpoints or the training loop;
`speechrep.downstream.runner` does the rest (load the upstream, feature cache, Featurizer, train on train,
select on dev, evaluate test once, write results.json):

    @dataclass
    class KSConfig:                       # satisfies TaskConfig; defaults also in configs/downstream/ks.yaml
        subset: str = "ks"                # corpus subset: CORPUS/<subset>/{train,dev,test}.jsonl.gz
        layers: list[int] | None = None   # None: learned softmax-weighted sum of every layer
        max_duration: float = 200.0       # seconds of audio per batch
        upstream_lr: float = 1e-5         # the upstream's lr when the tuning trains it (--tuning full)
        layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
        train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, max_steps=200_000, ...))

    def build(cfg: KSConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
        train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
        dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
        labels = sorted({keyword_of(c) for c in train_cuts})
        head = MeanPoolLinear(features.hidden_size, len(labels))
        def loss_fn(model, batch): ...   # logits, lengths = model(batch): head(weighted sum of layers)
        def evaluate(model, batches): ... # {"accuracy": ...} over a whole split, no grad
        return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                         loss_fn, evaluate)

    TASK = TaskSpec(name="ks", config=KSConfig, build=build, metric="accuracy", higher_is_better=True,
                    best_value=1.0)

Rules the runner relies on:
- `build` may read train and dev, never test: `TaskParts.load_test` is called once, after training, with the
  best-on-dev checkpoint loaded (`tests/test_downstream_runner.py` checks this).
- `loss_fn(model, batch)` returns a scalar loss or `(loss, {name: float})` for logging.
- `evaluate(model, batches)` runs under `torch.inference_mode()` with `model.eval()` (the runner sets both)
  and returns a dict that contains `TaskSpec.metric`; extra entries (e.g. CER next to WER) are reported too.
- Labels come from the cuts in `batch.cuts` (supervision fields and `custom`), read by small functions in the
  task file; a missing label raises `SpeechrepError` naming the cut and the field.
- `TaskParts.info` (optional) lands in results.json as `task_info` (the pair's from its first sub-run);
  `TaskParts.save_files(run_dir)` (optional) writes files a run needs beside its checkpoints.
- `TaskSpec.sub_runs` (optional) splits one task into runs whose metrics are averaged, e.g. ER's
  cross-validation folds: `{"fold1": cfg_for_fold_1, ...}`; each sub-run is its own run directory.
- `TaskSpec.trains=False` (QbE) skips training: the runner only evaluates dev, then test.
- `TaskSpec.frame_level=True` (PF, PR, ASR, SF, SD, SE, SS, prosody): a sequence-compressed upstream's
  segments are repeated onto its frame grid (`FeatureSource.frame_grid_view`), so `frame_shift` holds.
- The runner sets `cfg.train.metric`, `metric_mode` from `TaskSpec.metric`, `higher_is_better`: best.pt is
  always chosen by the task's headline dev metric.
- What a task may use from `features` (a FeatureSource): `hidden_size` (input size of the head),
  `hidden_sizes`, `frame_shift` (seconds per feature frame, for frame labels), `stride`, `name`, and
  `batches(...)` for a task that scores hidden states without training (QbE); never the upstream module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from lhotse import CutSet
from torch import Tensor, nn

if TYPE_CHECKING:
    from speechrep.downstream.features import FeatureBatch, FeatureSource
    from speechrep.train import TrainConfig

LossOutput = Tensor | tuple[Tensor, dict[str, float]]


class TaskConfig(Protocol):
    """The fields of a task config that the runner reads; every task's config dataclass has them."""

    subset: str
    layers: list[int] | None
    max_duration: float
    upstream_lr: float
    layer_weights_lr: float | None
    train_fraction: float  # the share of the train split a run trains on (seeded by train.seed)
    train: "TrainConfig"


@dataclass
class TaskParts:
    """What a task hands the runner for one training run."""

    head: nn.Module  # trained on the featurizer output: head(features (B, T, H), lengths (B,))
    train_cuts: CutSet
    dev_cuts: CutSet
    load_test: Callable[[], CutSet]  # called once, after model selection on dev
    loss_fn: Callable[[nn.Module, "FeatureBatch"], LossOutput]
    evaluate: Callable[[nn.Module, Iterable["FeatureBatch"]], dict[str, float]]
    # JSON-able facts about the run that results.json keeps as `task_info` (ST: sacrebleu's BLEU signature)
    info: dict[str, Any] = field(default_factory=dict)
    # writes the task's own files into the run directory, once per run (ST: its subword model)
    save_files: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task's name, config class, builder and headline metric (with its direction)."""

    name: str
    config: type
    build: Callable[[Any, Path, "FeatureSource"], TaskParts]
    metric: str
    higher_is_better: bool
    best_value: float  # the topline of the SUPERB-style score on mini-SUPERB (e.g. accuracy 1.0, PER 0.0)
    sub_runs: Callable[[Any], dict[str, Any]] | None = None  # e.g. ER folds; metrics are averaged over them
    trains: bool = True  # False (QbE): nothing to train, the runner only evaluates dev, then test
    percent: bool | None = None  # leaderboards show the metric ×100; None: if a rate (best value 0 or 1)
    # frame-level: labels or targets per frame (or CTC over frames); a sequence-compressed upstream's output
    # reaches it on the upstream's frame grid, utterance-level tasks read the compressed sequence
    frame_level: bool = False
    # whether a `domain:name=X` test condition may test it on CORPUS/<subset>/test_X instead of test: False
    # where the test reads files of its own beside the split's cuts (ASV trials, QbE truth)
    other_test_splits: bool = True

    @property
    def shown_as_percent(self) -> bool:
        """Whether leaderboards print the headline metric in % (accuracies, error rates)."""
        return self.best_value in (0.0, 1.0) if self.percent is None else self.percent


# Registry: task name → module defining `TASK`. Imported on demand so one broken task does not break the rest.
TASKS: dict[str, str] = {
    "ks": "speechrep.downstream.tasks.ks",
    "sid": "speechrep.downstream.tasks.sid",
    "er": "speechrep.downstream.tasks.er",
    "ic": "speechrep.downstream.tasks.ic",
    "pr": "speechrep.downstream.tasks.pr",
    "pf": "speechrep.downstream.tasks.pf",
    "asr": "speechrep.downstream.tasks.asr",
    "asv": "speechrep.downstream.tasks.asv",
    "sd": "speechrep.downstream.tasks.sd",
    "sf": "speechrep.downstream.tasks.sf",
    "se": "speechrep.downstream.tasks.se",
    "ss": "speechrep.downstream.tasks.ss",
    "qbe": "speechrep.downstream.tasks.qbe",
    "prosody": "speechrep.downstream.tasks.prosody",
    "prosody_future": "speechrep.downstream.tasks.prosody_future",
    "sentence_type": "speechrep.downstream.tasks.sentence_type",
    "emphasis": "speechrep.downstream.tasks.emphasis",
    "irony": "speechrep.downstream.tasks.irony",
    "vc": "speechrep.downstream.tasks.vc",
    "ood_asr": "speechrep.downstream.tasks.ood_asr",
    "st": "speechrep.downstream.tasks.st",
}


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The TaskSpec of a registered task; unknown names raise ConfigError listing the known ones."""
    from speechrep.errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}")
    spec = importlib.import_module(TASKS[name]).TASK
    if spec.name != name:
        raise ConfigError(f"{TASKS[name]}: TASK.name is {spec.name!r}, registered as {name!r}")
    return spec


def cut_label(cut: Any, name: str) -> Any:
    """A label of a cut's first supervision: a field (`text`, `speaker`) or a `custom` entry (`keyword`)."""
    from speechrep.errors import SpeechrepError

    if not cut.supervisions:
        raise SpeechrepError(f"cut {cut.id!r}: no supervision, so no {name!r} label")
    sup = cut.supervisions[0]
    value = getattr(sup, name, None) if name in ("text", "speaker", "language", "gender") else None
    if value is None and sup.custom:
        value = sup.custom.get(name)
    if value is None:
        raise SpeechrepError(f"cut {cut.id!r}: supervision has no {name!r} label")
    return value

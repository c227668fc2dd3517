"""ASV, automatic speaker verification (SUPERB; VoxCeleb1): x-vector + AM-softmax, cosine scoring, EER.

The head learns to classify the train split's speakers with an additive-margin softmax; verification uses
only its embeddings: each trial `1|0 enrol_cut test_cut` of `<subset>/<split>_trials.txt` is scored by the
cosine similarity of the two cuts' embeddings. Dev and test speakers are never seen in training. Reported:
EER (the headline, which also picks the checkpoint on dev) and minDCF (p_target 0.01).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from lhotse import CutSet
from torch import Tensor, nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import AMSoftmax, XVector
from speechrep.downstream.metrics import equal_error_rate, min_dcf
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig

Trial = tuple[int, str, str]  # (1 = same speaker, enrolment cut id, test cut id)


@dataclass
class ASVConfig:
    """SUPERB ASV: x-vector (512-dim embedding), AM-softmax (margin 0.4, scale 30), AdamW, 200k steps."""

    subset: str = "asv"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 64.0  # seconds of audio per batch (about 8 VoxCeleb utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    embedding_size: int = 512
    channels: int = 512  # TDNN frame layers
    stats_channels: int = 1500  # last frame layer, before statistics pooling
    margin: float = 0.4
    scale: float = 30.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=5000, log_every=500))


def read_trials(path: Path) -> list[Trial]:
    """Trials of a `<label> <enrol id> <test id>` file (label 1 = same speaker, 0 = different)."""
    if not path.is_file():
        raise SpeechrepError(f"{path}: no trial list (lines `1|0 enrol_cut_id test_cut_id`)")
    trials = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise SpeechrepError(f"{path}:{number}: expected `1|0 enrol_cut_id test_cut_id`, got {line!r}")
        trials.append((int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise SpeechrepError(f"{path}: the trial list is empty")
    return trials


def score_trials(embeddings: dict[str, Tensor], trials: list[Trial]) -> tuple[Tensor, Tensor]:
    """(scores, labels) of the trials: cosine similarity of the enrolment and test embeddings."""
    missing = next((cut for _, a, b in trials for cut in (a, b) if cut not in embeddings), None)
    if missing is not None:
        raise SpeechrepError(f"ASV trials: cut {missing!r} is not among the evaluated cuts")
    enrol = torch.stack([embeddings[a] for _, a, _ in trials])
    test = torch.stack([embeddings[b] for _, _, b in trials])
    scores = F.cosine_similarity(enrol, test, dim=-1)
    return scores, torch.tensor([label for label, _, _ in trials])


class SpeakerEmbedder(nn.Module):
    """An x-vector network whose embeddings the AM-softmax classifier trains; forward gives embeddings."""

    def __init__(self, input_size: int, num_speakers: int, cfg: ASVConfig):
        super().__init__()
        self.xvector = XVector(input_size, cfg.embedding_size, cfg.channels, cfg.stats_channels)
        self.classifier = AMSoftmax(cfg.embedding_size, num_speakers, cfg.margin, cfg.scale)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.xvector(features, lengths)


def build(cfg: ASVConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Train speakers as AM-softmax classes; dev trials scored by cosine similarity, EER and minDCF."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    speakers = {s: i for i, s in enumerate(sorted({cut_label(c, "speaker") for c in train_cuts}))}
    if len(speakers) < 2:
        raise SpeechrepError(f"{corpus_dir / cfg.subset}: ASV training needs at least 2 train speakers")
    head = SpeakerEmbedder(features.hidden_size, len(speakers), cfg)
    # Trial lists by split; the test list is read only by `load_test`, after model selection.
    trial_lists = {"dev": read_trials(corpus_dir / cfg.subset / "dev_trials.txt")}

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        embeddings, _ = model(batch)
        labels = torch.tensor([speakers[cut_label(c, "speaker")] for c in batch.cuts],
                              device=embeddings.device)
        return getattr(model, "module", model).head.classifier(embeddings, labels)  # `module`: under DDP

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        embeddings: dict[str, Tensor] = {}
        for batch in batches:
            vectors, _ = model(batch)
            embeddings.update(zip(batch.cuts.ids, vectors.float().cpu()))
        # The split being evaluated is the one whose trials are all among its cuts.
        trials = next((t for t in trial_lists.values() if all(a in embeddings for _, a, _ in t)), None)
        if trials is None:
            raise SpeechrepError(f"ASV: no trial list ({', '.join(trial_lists)}) matches the evaluated cuts")
        scores, labels = score_trials(embeddings, trials)
        return {"eer": equal_error_rate(scores.numpy(), labels.numpy()),
                "min_dcf": min_dcf(scores.numpy(), labels.numpy())}

    def load_test() -> CutSet:
        trial_lists["test"] = read_trials(corpus_dir / cfg.subset / "test_trials.txt")
        return load_cuts(corpus_dir, cfg.subset, "test")

    return TaskParts(head, train_cuts, dev_cuts, load_test, loss_fn, evaluate)


TASK = TaskSpec(name="asv", config=ASVConfig, build=build, metric="eer", higher_is_better=False,
                best_value=0.0, other_test_splits=False)

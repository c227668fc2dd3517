"""PR, phoneme recognition (SUPERB; LibriSpeech train-clean-100): linear per frame + CTC, PER.

Labels: `custom["phones"]` of each cut's supervision (a list of phone symbols). The vocabulary is the CTC
blank, `<unk>` and the phones of the train split; decoding is greedy (best path).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.ctc import Vocabulary, ctc_loss, greedy_ctc_decode
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import FrameLinear
from speechrep.downstream.metrics import error_rate
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig


@dataclass
class PRConfig:
    """SUPERB PR: linear head, AdamW lr 1e-2, batch 32 utterances, 100k steps, dev every 1k."""

    subset: str = "pr"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch (about 32 LibriSpeech utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=1e-2, schedule="constant", eval_every=1000, log_every=100))


def phones_of(cut) -> list[str]:  # noqa: ANN001 - a lhotse cut
    """The phone sequence of a cut."""
    phones = cut_label(cut, "phones")
    if isinstance(phones, str):
        phones = phones.split()
    if not isinstance(phones, list) or not all(isinstance(p, str) and p for p in phones):
        raise SpeechrepError(f"cut {cut.id!r}: custom['phones'] must be a list of phone symbols, "
                             f"got {str(phones)[:80]}")
    return phones


def build(cfg: PRConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Phone vocabulary from the train split, a linear CTC head, greedy decoding, PER."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    vocab = Vocabulary.build(phones_of(c) for c in train_cuts)
    head = FrameLinear(features.hidden_size, len(vocab))

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, lengths = model(batch)
        return ctc_loss(logits, lengths, [vocab.encode(phones_of(c)) for c in batch.cuts])

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        hypotheses, references = [], []
        for batch in batches:
            logits, lengths = model(batch)
            hypotheses += [vocab.decode(ids) for ids in greedy_ctc_decode(logits, lengths, vocab.blank_id)]
            references += [phones_of(c) for c in batch.cuts]
        return {"per": error_rate(hypotheses, references)}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="pr", config=PRConfig, build=build, metric="per", higher_is_better=False, best_value=0.0,
                frame_level=True)

"""SF, slot filling (SUPERB; Audio SNIPS): BiLSTM + CTC over characters and slot tags, slot-type F1 and CER.

Labels: the `text` of each cut's supervision and `custom["tags"]`, one IOB tag per word (`O`, `B-type`,
`I-type`). The CTC target is the transcript with each slot value wrapped in tag symbols, SUPERB's format:
`book a table for B-party_size five E-party_size` (characters, `|` between words, each `B-type`/`E-type` one
symbol). Greedy decoding; reported: slot-type F1 (the headline, picks the checkpoint on dev), slot-value CER,
and the character error rate of the plain transcript.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.ctc import Vocabulary, chars_to_text, ctc_loss, greedy_ctc_decode, slot_char_tokens
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import BiLSTMCTC
from speechrep.downstream.metrics import char_error_rate, slot_type_f1, slot_value_cer
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig

_TAG = re.compile(r"^[BE]-\S+$")


@dataclass
class SFConfig:
    """SUPERB SF: 2-layer BiLSTM (1024 units) + CTC as for ASR, AdamW lr 1e-4, batch 32 utterances."""

    subset: str = "sf"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 100.0  # seconds of audio per batch (about 32 SNIPS utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    hidden_size: int = 1024
    num_layers: int = 2
    dropout: float = 0.2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=2000, log_every=100))


def tagged_transcript(words: list[str], tags: list[str]) -> str:
    """Words with each slot wrapped as `B-type value E-type`; a stray `I-type` opens a slot like `B-type`."""
    if len(words) != len(tags):
        raise SpeechrepError(f"{len(words)} words but {len(tags)} slot tags")
    out: list[str] = []
    open_type = None
    for word, tag in zip(words, tags):
        kind, _, slot_type = tag.partition("-")
        continues = kind == "I" and slot_type == open_type
        if open_type is not None and not continues:
            out.append(f"E-{open_type}")
            open_type = None
        if kind in ("B", "I") and slot_type and not continues:
            out.append(f"B-{slot_type}")
            open_type = slot_type
        out.append(word)
    if open_type is not None:
        out.append(f"E-{open_type}")
    return " ".join(out)


def slot_target(cut) -> str:  # noqa: ANN001 - a lhotse cut
    """The cut's lower-cased transcript with slot tags (the CTC target and the metrics' reference)."""
    words = str(cut_label(cut, "text")).lower().split()
    tags = cut_label(cut, "tags")
    try:
        return tagged_transcript(words, [str(t) for t in tags])
    except SpeechrepError as error:
        raise SpeechrepError(f"cut {cut.id!r}: {error}") from None


def plain_text(tagged: str) -> str:
    """The transcript without its slot tags."""
    return " ".join(w for w in tagged.split() if not _TAG.match(w))


def build(cfg: SFConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Characters + slot tags from the train split, a BiLSTM CTC head, slot-type F1 and slot-value CER."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    vocab = Vocabulary.build(slot_char_tokens(slot_target(c)) for c in train_cuts)
    head = BiLSTMCTC(features.hidden_size, len(vocab), cfg.hidden_size, cfg.num_layers, cfg.dropout)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, lengths = model(batch)
        return ctc_loss(logits, lengths, [vocab.encode(slot_char_tokens(slot_target(c))) for c in batch.cuts])

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        hypotheses, references = [], []
        for batch in batches:
            logits, lengths = model(batch)
            hypotheses += [chars_to_text(vocab.decode(ids))
                           for ids in greedy_ctc_decode(logits, lengths, vocab.blank_id)]
            references += [slot_target(c) for c in batch.cuts]
        plain_hypotheses = [plain_text(h) for h in hypotheses]
        plain_references = [plain_text(r) for r in references]
        return {"slot_type_f1": slot_type_f1(hypotheses, references),
                "slot_value_cer": slot_value_cer(hypotheses, references),
                "cer": char_error_rate(plain_hypotheses, plain_references)}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="sf", config=SFConfig, build=build, metric="slot_type_f1", higher_is_better=True,
                best_value=1.0, frame_level=True)

"""ASR (SUPERB; LibriSpeech train-clean-100): 2-layer BiLSTM + CTC over characters, WER and CER.

Labels: `text` of each cut's supervision, lower-cased; characters with `|` between words. Decoding is greedy
(best path, no language model), as SUPERB reports without an LM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.ctc import Vocabulary, char_tokens, chars_to_text, ctc_loss, greedy_ctc_decode
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import BiLSTMCTC
from speechrep.downstream.metrics import char_error_rate, word_error_rate
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.train import TrainConfig


@dataclass
class ASRConfig:
    """SUPERB ASR: 2-layer BiLSTM (1024 units), AdamW lr 1e-4, batch 32 utterances, 200k steps."""

    subset: str = "asr"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch (about 32 LibriSpeech utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    hidden_size: int = 1024
    num_layers: int = 2
    dropout: float = 0.2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=2000, log_every=100))


def transcript_of(cut) -> str:  # noqa: ANN001 - a lhotse cut
    """The normalised transcript of a cut: lower case, single spaces."""
    return " ".join(str(cut_label(cut, "text")).lower().split())


def build(cfg: ASRConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Character vocabulary from the train split, a BiLSTM CTC head, greedy decoding, WER and CER."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    vocab = Vocabulary.build(char_tokens(transcript_of(c)) for c in train_cuts)
    head = BiLSTMCTC(features.hidden_size, len(vocab), cfg.hidden_size, cfg.num_layers, cfg.dropout)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, lengths = model(batch)
        return ctc_loss(logits, lengths, [vocab.encode(char_tokens(transcript_of(c))) for c in batch.cuts])

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        hypotheses, references = [], []
        for batch in batches:
            logits, lengths = model(batch)
            hypotheses += [chars_to_text(vocab.decode(ids))
                           for ids in greedy_ctc_decode(logits, lengths, vocab.blank_id)]
            references += [transcript_of(c) for c in batch.cuts]
        return {"wer": word_error_rate(hypotheses, references),
                "cer": char_error_rate(hypotheses, references)}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="asr", config=ASRConfig, build=build, metric="wer", higher_is_better=False,
                best_value=0.0, frame_level=True)

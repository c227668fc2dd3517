"""ST (SUPERB-SG speech translation; CoVoST 2 En→De): a transformer decoder with cross-attention over the
weighted sum of layers, subword targets, BLEU by sacrebleu.

Data: CORPUS/<subset>/{train,dev,test}.jsonl.gz whose supervisions carry `text` (the source transcript) and
`custom.translation` (the reference): `speechrep synth --subsets st` (English → Zelan, an invented language;
`speechrep.data.synth.translation`) or `speechrep prepare covost2` (English → German).

Model: the weighted sum → `conv_layers` stride-2 convolutions (2x subsampling each, to d_model) → a pre-norm
transformer decoder (`num_layers`, `num_heads`, `ffn_dim`; `torch.nn.TransformerDecoder`, see
`speechrep.downstream.seq2seq`) attending to it; label-smoothed cross-entropy with teacher forcing.
Targets: a sentencepiece model (`subword_model` unigram or bpe, at most `vocab_size` pieces) trained on the
train split's translations when the run starts, saved as `<run dir>/subwords.model`.

Metrics (dev and test): `bleu`, corpus BLEU of beam search (`beam_size`, `length_penalty`; the headline,
which selects the checkpoint on dev), `bleu_greedy`, and `copy_source_bleu`, the trivial baseline of the
source transcript used as the translation. All by sacrebleu on detokenized text with its default settings;
the signature is `task_info.bleu_signature` in results.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.metrics.translation import bleu_signature, corpus_bleu
from speechrep.downstream.seq2seq import (
    PAD_ID,
    SubwordModel,
    TransformerDecoderHead,
    beam_search,
    greedy_decode,
    teacher_forcing,
)
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.train import TrainConfig


@dataclass
class STConfig:
    """SUPERB-SG ST: subword transformer decoder over the weighted sum, label smoothing 0.1, beam 5."""

    subset: str = "st"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 200.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    vocab_size: int = 1000  # at most this many subword pieces (a small corpus yields fewer)
    subword_model: str = "unigram"  # sentencepiece model type: unigram or bpe
    conv_layers: int = 1  # stride-2 convolutions before the decoder (2x subsampling each; 0: a linear layer)
    d_model: int = 256
    num_layers: int = 3
    num_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    beam_size: int = 5
    length_penalty: float = 1.0  # beam hypotheses ranked by score / length**length_penalty
    max_len_ratio: float = 1.5  # decode at most ratio × (longest train target) + 5 subwords
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=100_000, lr=2e-4, schedule="cosine", warmup_steps=1000, eval_every=2000, log_every=100))


def translation_of(cut) -> str:  # noqa: ANN001 - a lhotse cut
    """The reference translation of a cut (`custom.translation`), single-spaced."""
    return " ".join(str(cut_label(cut, "translation")).split())


def source_of(cut) -> str:  # noqa: ANN001 - a lhotse cut
    """The source transcript of a cut (`text`), single-spaced."""
    return " ".join(str(cut_label(cut, "text")).split())


def build(cfg: STConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Subword model from the train translations, the decoder head, teacher-forced loss, BLEU (beam, greedy,
    copy-source)."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    subwords = SubwordModel.train((translation_of(c) for c in train_cuts), cfg.vocab_size, cfg.subword_model)
    max_len = int(cfg.max_len_ratio * max(len(subwords.encode(translation_of(c))) for c in train_cuts)) + 5
    head = TransformerDecoderHead(features.hidden_size, len(subwords), cfg.d_model, cfg.num_layers,
                                  cfg.num_heads, cfg.ffn_dim, cfg.dropout, cfg.conv_layers)

    def unwrapped(model: nn.Module) -> TransformerDecoderHead:
        return getattr(model, "module", model).head  # DDP wraps the model

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        (memory, memory_lengths), _ = model(batch)
        inputs, outputs = teacher_forcing([subwords.encode(translation_of(c)) for c in batch.cuts],
                                          memory.device)
        logits = unwrapped(model).logits(memory, memory_lengths, inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), outputs.flatten(), ignore_index=PAD_ID,
                               label_smoothing=cfg.label_smoothing)

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        head = unwrapped(model)
        beam, greedy, references, sources = [], [], [], []
        for batch in batches:
            (memory, memory_lengths), _ = model(batch)
            greedy += [subwords.decode(ids) for ids in greedy_decode(head, memory, memory_lengths, max_len)]
            if cfg.beam_size > 1:
                found = beam_search(head, memory, memory_lengths, cfg.beam_size, max_len, cfg.length_penalty)
                beam += [subwords.decode(ids) for ids in found]
            references += [translation_of(c) for c in batch.cuts]
            sources += [source_of(c) for c in batch.cuts]
        bleu_greedy = corpus_bleu(greedy, references)
        return {"bleu": corpus_bleu(beam, references) if cfg.beam_size > 1 else bleu_greedy,
                "bleu_greedy": bleu_greedy, "copy_source_bleu": corpus_bleu(sources, references)}

    info = {"bleu_signature": bleu_signature(), "subwords": len(subwords), "max_decode_len": max_len}
    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate, info=info, save_files=lambda d: subwords.save(d / "subwords.model"))


TASK = TaskSpec(name="st", config=STConfig, build=build, metric="bleu", higher_is_better=True,
                best_value=100.0, percent=False)

"""PF, frame-level phoneme classification (the Mockingjay/TERA probe): linear per frame, frame accuracy.

Labels: `custom["phone_alignment"]`, a list of `[phone, start_s, end_s]`. Frame i of the features covers
[i·shift, (i+1)·shift) seconds (shift = upstream stride / 16 kHz) and takes the phone that contains its
centre, or `<sil>` where no phone does (pauses, leading and trailing silence). Every valid frame is scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import FrameLinear
from speechrep.downstream.metrics import accuracy
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask

SILENCE = "<sil>"
IGNORE = -100  # F.cross_entropy's ignore_index: padding frames


@dataclass
class PFConfig:
    """A linear probe per frame: AdamW lr 1e-3, batch about 32 utterances, 50k steps, dev every 1k."""

    subset: str = "pr"  # any subset with phone alignments (pr, asr, unlabeled of mini-SUPERB)
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=50_000, lr=1e-3, schedule="constant", eval_every=1000, log_every=100))


def alignment_of(cut) -> list[tuple[str, float, float]]:  # noqa: ANN001 - a lhotse cut
    """The (phone, start_s, end_s) segments of a cut, times relative to the cut."""
    raw = cut_label(cut, "phone_alignment")
    try:
        return [(str(p), float(s), float(e)) for p, s, e in raw]
    except (TypeError, ValueError):
        raise SpeechrepError(f"cut {cut.id!r}: custom['phone_alignment'] must be [phone, start_s, end_s] "
                             f"triples, got {str(raw)[:80]}") from None


def frame_labels(alignment: list[tuple[str, float, float]], num_frames: int, shift: float,
                 classes: dict[str, int]) -> np.ndarray:
    """Class id of each frame: the phone containing the frame centre, else `<sil>`; unseen phones -> -1."""
    centres = (np.arange(num_frames) + 0.5) * shift
    labels = np.full(num_frames, classes[SILENCE], dtype=np.int64)
    if alignment:
        starts = np.array([s for _, s, _ in alignment])
        ends = np.array([e for _, _, e in alignment])
        ids = np.array([classes.get(p, -1) for p, _, _ in alignment])
        seg = np.searchsorted(starts, centres, side="right") - 1  # last segment starting before the centre
        inside = (seg >= 0) & (centres < ends[np.clip(seg, 0, None)])
        labels[inside] = ids[seg[inside]]
    return labels


def build(cfg: PFConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Phone classes (+ `<sil>`) from the train split, a linear frame head, cross-entropy, frame accuracy."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    phones = sorted({p for c in train_cuts for p, _, _ in alignment_of(c)} - {SILENCE})
    classes = {p: i for i, p in enumerate([SILENCE, *phones])}
    head = FrameLinear(features.hidden_size, len(classes))

    def targets(batch: FeatureBatch, lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
        rows = np.full((len(batch.cuts), max_frames), IGNORE, dtype=np.int64)
        for i, (cut, n) in enumerate(zip(batch.cuts, lengths.tolist())):
            rows[i, :n] = frame_labels(alignment_of(cut), n, features.frame_shift, classes)
        return torch.from_numpy(rows).to(lengths.device)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, lengths = model(batch)
        gold = targets(batch, lengths, logits.shape[1])
        gold = gold.masked_fill(gold < 0, IGNORE)  # unseen phones cannot be learned; padding is ignored
        return F.cross_entropy(logits.transpose(1, 2), gold, ignore_index=IGNORE)

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        predictions, golds, masks = [], [], []
        for batch in batches:
            logits, lengths = model(batch)
            predictions.append(logits.argmax(-1).flatten().cpu())
            golds.append(targets(batch, lengths, logits.shape[1]).flatten().cpu())
            masks.append(padding_mask(lengths, logits.shape[1]).flatten().cpu())
        return {"accuracy": accuracy(torch.cat(predictions), torch.cat(golds), torch.cat(masks))}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="pf", config=PFConfig, build=build, metric="accuracy", higher_is_better=True,
                best_value=1.0, frame_level=True)

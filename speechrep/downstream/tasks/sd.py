"""SD, speaker diarization (SUPERB; Libri2Mix): 1-layer LSTM, permutation-invariant BCE, DER.

Labels: one supervision per speaker turn (start, duration, speaker; times relative to the cut), as in the
`sd/<split>.rttm` files. Frame i of the features covers [i·shift, (i+1)·shift) seconds, with shift the
upstream's stride / 16 kHz, and is active for a speaker when its centre lies inside one of their turns.
Speakers are numbered by first appearance; the head predicts `num_speakers` activity channels and the
loss takes the best channel-to-speaker permutation per recording.

Scoring follows SUPERB's: frame probabilities above `threshold`, a median filter of `median_filter` frames,
then the hypothesis turns are compared with the reference turns on a 10 ms grid, collar 0 (every frame
scored, overlapped speech included), the speaker mapping chosen per recording, and the corpus DER pooled
over recordings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from scipy.ndimage import median_filter
from torch import nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import DiarizationLSTM, pit_bce_loss
from speechrep.downstream.metrics import Segment, combine_der, der_from_segments, segments_to_frames
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.train import TrainConfig

SCORING_SHIFT = 0.01  # seconds: the grid on which hypothesis and reference turns are compared


@dataclass
class SDConfig:
    """SUPERB SD: 1-layer LSTM (512 units), AdamW lr 1e-4, 30k steps; threshold 0.5, median filter 11."""

    subset: str = "sd"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 160.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    num_speakers: int = 2
    hidden_size: int = 512
    threshold: float = 0.5  # speaker active when its probability exceeds this
    median_filter: int = 11  # frames of median smoothing of the decisions (1 = none)
    collar: float = 0.0  # seconds around reference boundaries left unscored
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=30_000, lr=1e-4, schedule="constant", eval_every=500, log_every=100))


def speaker_turns(cut) -> list[Segment]:  # noqa: ANN001 - a lhotse cut
    """The cut's speaker turns (times relative to the cut), in order of start time."""
    turns = [Segment(str(s.speaker), max(0.0, s.start), min(cut.duration, s.end)) for s in cut.supervisions]
    if not turns or any(s.speaker in ("None", "") for s in turns):
        raise SpeechrepError(f"cut {cut.id!r}: diarization needs one supervision per turn, each with a "
                             "speaker")
    return sorted(turns, key=lambda s: (s.start, s.end))


def frame_activity(turns: list[Segment], num_frames: int, shift: float, num_speakers: int,
                   cut_id: str = "") -> np.ndarray:
    """(num_frames, num_speakers) 0/1 activity; speakers ordered by first appearance, unused columns 0."""
    speakers = list(dict.fromkeys(s.speaker for s in turns))
    if len(speakers) > num_speakers:
        raise SpeechrepError(f"cut {cut_id!r}: {len(speakers)} speakers but the head has {num_speakers} "
                             "(set num_speakers)")
    activity = np.zeros((num_frames, num_speakers), dtype=np.float32)
    activity[:, :len(speakers)], _ = segments_to_frames(turns, num_frames, shift, speakers)
    return activity


def activity_to_turns(activity: np.ndarray, shift: float) -> list[Segment]:
    """Turns of a (T, S) 0/1 activity matrix: each run of active frames of channel s → Segment(`s`, ...)."""
    padded = np.pad(activity.astype(np.int8), ((1, 1), (0, 0)))
    edges = np.diff(padded, axis=0)  # +1 where a run starts, -1 one past where it ends
    turns = []
    for channel in range(activity.shape[1]):
        starts = np.flatnonzero(edges[:, channel] == 1)
        ends = np.flatnonzero(edges[:, channel] == -1)
        turns += [Segment(str(channel), a * shift, b * shift) for a, b in zip(starts, ends)]
    return turns


def smooth_decisions(probabilities: np.ndarray, threshold: float, width: int) -> np.ndarray:
    """(T, S) decisions: probability > threshold, then a median filter of `width` frames along time."""
    decisions = (probabilities > threshold).astype(np.int8)
    if width > 1:
        decisions = median_filter(decisions, size=(width, 1), mode="nearest")
    return decisions


def build(cfg: SDConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """A 1-layer LSTM with one activity output per speaker, PIT-BCE, DER from the smoothed decisions."""
    if cfg.num_speakers < 1 or cfg.median_filter < 1:
        raise ConfigError(f"sd: num_speakers and median_filter must be >= 1, got {cfg.num_speakers}, "
                          f"{cfg.median_filter}")
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    head = DiarizationLSTM(features.hidden_size, cfg.num_speakers, cfg.hidden_size)
    shift = features.frame_shift

    def labels(batch: FeatureBatch, lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
        rows = np.zeros((len(batch.cuts), max_frames, cfg.num_speakers), dtype=np.float32)
        for i, (cut, n) in enumerate(zip(batch.cuts, lengths.tolist())):
            rows[i, :n] = frame_activity(speaker_turns(cut), n, shift, cfg.num_speakers, cut.id)
        return torch.from_numpy(rows).to(lengths.device)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        logits, lengths = model(batch)
        loss, _ = pit_bce_loss(logits, labels(batch, lengths, logits.shape[1]), lengths)
        return loss

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        results = []
        for batch in batches:
            logits, lengths = model(batch)
            probabilities = torch.sigmoid(logits.float()).cpu().numpy()
            for cut, p, n in zip(batch.cuts, probabilities, lengths.tolist()):
                decisions = smooth_decisions(p[:n], cfg.threshold, cfg.median_filter)
                hypothesis = activity_to_turns(decisions, shift)
                results.append(der_from_segments(speaker_turns(cut), hypothesis, SCORING_SHIFT, cfg.collar))
        total = combine_der(results)
        return {"der": total.der, "miss": total.miss, "false_alarm": total.false_alarm,
                "confusion": total.confusion}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="sd", config=SDConfig, build=build, metric="der", higher_is_better=False,
                best_value=0.0, frame_level=True)

"""Diarization error rate (DER), frame level, with overlapped speech counted and an optional collar.

DER = (missed speech + false alarm + speaker confusion) / total reference speech, where at each frame with
N_ref reference and N_hyp hypothesis speakers active and N_correct of them matched:
miss = max(0, N_ref - N_hyp), false alarm = max(0, N_hyp - N_ref), confusion = min(N_ref, N_hyp) - N_correct.
Overlapped frames count every active speaker (NIST md-eval with overlap scored). Hypothesis speakers
are mapped one-to-one to reference speakers by the Hungarian assignment (scipy's `linear_sum_assignment`)
that maximises the frames they share. The collar (seconds) removes from scoring the frames within `collar`
of any reference segment boundary, on both sides (md-eval's `-c`; SUPERB's SD uses collar 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from speechrep.errors import SpeechrepError


@dataclass(frozen=True)
class Segment:
    """One speaker turn: speaker label, start and end in seconds."""

    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class DERResult:
    """DER and its parts, each as a fraction of the scored reference speech (in frames)."""

    der: float
    miss: float
    false_alarm: float
    confusion: float
    reference_frames: int


def read_rttm(path: str | Path) -> dict[str, list[Segment]]:
    """Read an RTTM file into {recording id: segments}; only SPEAKER lines are used."""
    path = Path(path)
    recordings: dict[str, list[Segment]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration = float(fields[3]), float(fields[4])
            segment = Segment(fields[7], start, start + duration)
        except (IndexError, ValueError):
            raise SpeechrepError(f"{path}:{number}: not an RTTM SPEAKER line: {line!r}") from None
        if duration < 0:
            raise SpeechrepError(f"{path}:{number}: negative duration {duration}")
        recordings.setdefault(fields[1], []).append(segment)
    return recordings


def segments_to_frames(
    segments: list[Segment], num_frames: int, frame_shift: float = 0.01, speakers: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """(num_frames, num_speakers) bool activity of segments on a grid of `frame_shift` seconds."""
    speakers = sorted({s.speaker for s in segments}) if speakers is None else speakers
    index = {name: k for k, name in enumerate(speakers)}
    activity = np.zeros((num_frames, len(speakers)), dtype=bool)
    for segment in segments:
        if segment.end < segment.start:
            raise SpeechrepError(f"diarization: segment {segment} ends before it starts")
        # A frame belongs to a segment when the frame's centre lies inside it.
        first = max(0, int(np.ceil(segment.start / frame_shift - 0.5)))
        last = min(num_frames, int(np.ceil(segment.end / frame_shift - 0.5)))
        activity[first:last, index[segment.speaker]] = True
    return activity, speakers


def diarization_error_rate(
    reference: np.ndarray, hypothesis: np.ndarray, scored: np.ndarray | None = None
) -> DERResult:
    """DER of (T, S_ref) vs (T, S_hyp) bool frame activities; `scored` (T,) bool drops collar frames."""
    reference = np.asarray(reference, dtype=bool)
    hypothesis = np.asarray(hypothesis, dtype=bool)
    if reference.ndim != 2 or hypothesis.ndim != 2 or len(reference) != len(hypothesis):
        raise SpeechrepError(
            f"DER: expected (T, speakers) activities of equal T, got {reference.shape} and {hypothesis.shape}"
        )
    if scored is not None:
        reference, hypothesis = reference[scored], hypothesis[scored]
    # Frames both speakers talk in, for every (reference, hypothesis) pair; the mapping maximises the total.
    shared = reference.T.astype(np.int64) @ hypothesis.astype(np.int64)
    rows, cols = linear_sum_assignment(shared, maximize=True)
    mapped_hypothesis = np.zeros_like(reference)
    mapped_hypothesis[:, rows] = hypothesis[:, cols]
    n_ref = reference.sum(axis=1)
    n_hyp = hypothesis.sum(axis=1)
    n_correct = (reference & mapped_hypothesis).sum(axis=1)
    total = int(n_ref.sum())
    if total == 0:
        raise SpeechrepError("DER: the reference has no scored speech")
    miss = np.maximum(n_ref - n_hyp, 0).sum() / total
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum() / total
    confusion = (np.minimum(n_ref, n_hyp) - n_correct).sum() / total
    der = miss + false_alarm + confusion
    return DERResult(float(der), float(miss), float(false_alarm), float(confusion), total)


def combine_der(results: list[DERResult]) -> DERResult:
    """Corpus DER of many recordings: errors summed over all of them, weighted by their reference speech."""
    total = sum(r.reference_frames for r in results)
    if total == 0:
        raise SpeechrepError("DER: no recording with scored reference speech")

    def pooled(part: str) -> float:
        return sum(getattr(r, part) * r.reference_frames for r in results) / total

    return DERResult(pooled("der"), pooled("miss"), pooled("false_alarm"), pooled("confusion"), total)


def der_from_segments(
    reference: list[Segment], hypothesis: list[Segment], frame_shift: float = 0.01, collar: float = 0.0
) -> DERResult:
    """DER between two segment lists of one recording, on a `frame_shift` grid, `collar` seconds excluded."""
    end = max((s.end for s in (*reference, *hypothesis)), default=0.0)
    num_frames = int(np.ceil(end / frame_shift)) + 1
    ref_frames, _ = segments_to_frames(reference, num_frames, frame_shift)
    hyp_frames, _ = segments_to_frames(hypothesis, num_frames, frame_shift)
    scored = None
    if collar > 0:
        centres = (np.arange(num_frames) + 0.5) * frame_shift
        boundaries = np.array([t for s in reference for t in (s.start, s.end)])
        near = np.abs(centres[:, None] - boundaries[None, :]) < collar
        scored = ~near.any(axis=1)
    return diarization_error_rate(ref_frames, hyp_frames, scored)

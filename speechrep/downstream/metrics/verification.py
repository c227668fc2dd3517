"""Speaker-verification metrics: equal error rate and minimum detection cost, from trial scores.

Scores are higher for "same speaker"; labels are 1 for target trials, 0 for non-target trials. Both metrics
sweep every threshold of the ROC curve (scikit-learn's `roc_curve`). `min_dcf` uses the VoxCeleb / SUPERB
operating point p_target = 0.01, C_miss = C_fa = 1, normalised by the cost of the best trivial system
(accept all or reject all), so 1.0 means "no better than not deciding".
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from speechrep.errors import SpeechrepError


def _error_curves(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, miss rate) at every threshold, from accept-nothing to accept-everything."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise SpeechrepError(f"verification: {scores.size} scores but {labels.size} labels")
    if not np.isfinite(scores).all():
        raise SpeechrepError("verification: scores contain NaN or Inf")
    if not np.isin(labels, (0, 1)).all():
        raise SpeechrepError("verification: labels must be 0 (non-target) or 1 (target)")
    if labels.min() == labels.max():
        raise SpeechrepError("verification: need both target and non-target trials")
    fpr, tpr, _ = roc_curve(labels.astype(int), scores, drop_intermediate=False)
    return fpr, 1.0 - tpr


def equal_error_rate(scores: ArrayLike, labels: ArrayLike) -> float:
    """EER: the rate where misses equal false alarms, interpolated linearly between ROC points."""
    fpr, fnr = _error_curves(scores, labels)
    gap = fnr - fpr  # starts at 1 (accept nothing), ends at -1 (accept everything)
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def min_dcf(
    scores: ArrayLike, labels: ArrayLike, p_target: float = 0.01, cost_miss: float = 1.0, cost_fa: float = 1.0
) -> float:
    """Normalised minimum detection cost over all thresholds (VoxCeleb/SUPERB: p_target 0.01, costs 1)."""
    if not 0.0 < p_target < 1.0:
        raise SpeechrepError(f"min_dcf: p_target must be in (0, 1), got {p_target}")
    fpr, fnr = _error_curves(scores, labels)
    cost = cost_miss * fnr * p_target + cost_fa * fpr * (1.0 - p_target)
    return float(cost.min() / min(cost_miss * p_target, cost_fa * (1.0 - p_target)))

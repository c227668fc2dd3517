"""Query-by-example metrics on a (queries × documents) score matrix: MTWV and MAP.

A trial is a (query, document) pair; `labels[q, d]` is True when document d contains query q. Higher scores
mean "more likely contains".

Term-weighted value at a threshold θ (one threshold shared by all queries):

    TWV(θ) = 1 - mean_q [ P_miss(q, θ) + β · P_fa(q, θ) ],   β = (C_fa / C_miss) · (1 / P_target - 1)

with P_miss = missed / true documents of q and P_fa = false alarms / non-matching documents of q; queries with
no matching document are left out. MTWV is the maximum over θ (accepting nothing gives TWV = 0, so MTWV ≥ 0).
Defaults are the costs of the MediaEval QUESST 2014 evaluation used by SUPERB's QbE task (also SWS 2013):
P_target = 0.0008, C_miss = 100, C_fa = 1, so β = 12.49. NIST STD 2006 (P_target 1e-4, C/V = 0.1, β = 999.9)
is available by passing those values.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score

from speechrep.errors import SpeechrepError

QUESST_P_TARGET = 0.0008
QUESST_COST_MISS = 100.0
QUESST_COST_FA = 1.0


def _checked(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise SpeechrepError(
            f"QbE: expected (queries, documents) scores and labels, got {scores.shape}, {labels.shape}"
        )
    if not np.isfinite(scores).all():
        raise SpeechrepError("QbE: scores contain NaN or Inf")
    keep = labels.any(axis=1)
    if not keep.any():
        raise SpeechrepError("QbE: no query has a matching document")
    return scores[keep], labels[keep]


def maximum_term_weighted_value(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = QUESST_P_TARGET,
    cost_miss: float = QUESST_COST_MISS,
    cost_fa: float = QUESST_COST_FA,
) -> float:
    """MTWV over one global threshold (QUESST 2014 costs by default); queries without matches are skipped."""
    scores, labels = _checked(scores, labels)
    beta = cost_fa / cost_miss * (1.0 / p_target - 1.0)
    num_queries, num_docs = labels.shape
    num_true = labels.sum(axis=1, keepdims=True)
    num_false = np.maximum(num_docs - num_true, 1)  # a query matching every document can have no false alarm
    # TWV(θ) = sum over accepted trials of these gains: +1/(Q·N_true) per hit, -β/(Q·N_false) per false alarm.
    gain = np.where(labels, 1.0 / num_true, -beta / num_false) / num_queries
    order = np.argsort(-scores, axis=None, kind="stable")
    sorted_scores = scores.ravel()[order]
    twv = np.cumsum(gain.ravel()[order])
    # Ties move together: a threshold can only sit after the last trial of a run of equal scores.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    return float(max(0.0, twv[last_of_tie].max()))


def mean_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean over queries of the average precision of their document ranking (scikit-learn)."""
    scores, labels = _checked(scores, labels)
    return float(np.mean([average_precision_score(lab, sc) for sc, lab in zip(scores, labels)]))

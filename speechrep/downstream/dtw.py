"""Subsequence DTW for query-by-example spoken term detection (SUPERB QbE: no training, one layer at a time).

The query (N frames) is matched entirely; the match may start and end anywhere in the document (M frames).
Frame distance is the cosine distance 1 - cos(q_i, d_j). The accumulated cost follows the steps (i-1, j),
(i, j-1) and (i-1, j-1):

    D[i, j] = C[i, j] + min(D[i-1, j], D[i-1, j-1], D[i, j-1]),   D[0, j] = C[0, j]   (free start)

Each query row is solved for all document columns at once: with a_j = C[i, j] + min(D[i-1, j], D[i-1, j-1])
and S_j the running sum of row i's costs, D[i, j] = S_j + min_{k<=j}(a_k - S_k), a cumulative minimum. The
loop runs over the N query frames only, batched over documents. The detection score is minus the best end cost
divided by the query length, so higher means "more likely contains the query". MTWV uses one threshold for all
queries, so `normalize_query_scores` z-normalises each query's scores over the documents first (the usual
QUESST practice; a query's raw scores depend on its length and phones).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from speechrep.errors import SpeechrepError
from speechrep.upstream.base import padding_mask


def cosine_distances(query: Tensor, documents: Tensor) -> Tensor:
    """(B, N, M) cosine distances between (N, H) query frames and (B, M, H) document frames."""
    return 1.0 - F.normalize(query, dim=-1) @ F.normalize(documents, dim=-1).transpose(1, 2)


def subsequence_dtw_end_costs(costs: Tensor) -> Tensor:
    """(B, M) accumulated costs of the last query row: the best match of the whole query ending at column j.

    `costs` is (B, N, M) frame distances (query frames × document frames), all >= 0.
    """
    rows = costs.double().transpose(0, 1).contiguous()  # (N, B, M); float64 keeps the running sums exact
    # Free start: the first query frame may align at any column (costs are >= 0, so starting fresh is best).
    previous = rows[0]
    inf_column = torch.full_like(previous[:, :1], float("inf"))
    for row_costs in rows[1:]:
        diagonal = torch.cat([inf_column, previous[:, :-1]], dim=1)
        previous = _row_with_horizontal_steps(row_costs + torch.minimum(previous, diagonal), row_costs)
    return previous


def _row_with_horizontal_steps(entry: Tensor, row_costs: Tensor) -> Tensor:
    """Close a row under horizontal steps: D_j = min(entry_j, D_{j-1} + c_j), via a cumulative minimum."""
    running = row_costs.cumsum(dim=1)
    return running + torch.cummin(entry - running, dim=1).values


def qbe_scores(query: Tensor, documents: Tensor, document_lengths: Tensor | None = None) -> Tensor:
    """(B,) detection scores of one (N, H) query in (B, M, H) padded documents; higher = better match."""
    if query.dim() != 2 or documents.dim() != 3 or query.shape[-1] != documents.shape[-1]:
        raise SpeechrepError(
            "QbE DTW: expected query (N, H) and documents (B, M, H), "
            f"got {tuple(query.shape)}, {tuple(documents.shape)}"
        )
    if query.shape[0] == 0 or documents.shape[1] == 0:
        raise SpeechrepError("QbE DTW: empty query or document")
    batch, max_len = documents.shape[:2]
    if document_lengths is None:
        document_lengths = torch.full((batch,), max_len, dtype=torch.long)
    accumulated = subsequence_dtw_end_costs(cosine_distances(query, documents))
    # Padding sits right of the real frames, and costs only flow rightwards, so real columns are unaffected.
    padded = ~padding_mask(document_lengths.to(documents.device), max_len)
    best_end = accumulated.masked_fill(padded, float("inf")).min(dim=1).values
    return (-best_end / query.shape[0]).float()


def normalize_query_scores(scores: Tensor) -> Tensor:
    """Z-normalise a (queries, documents) score matrix per query (row), so one threshold fits all queries."""
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise SpeechrepError(f"QbE: need (queries, documents >= 2) scores, got {tuple(scores.shape)}")
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, keepdim=True).clamp(min=1e-8)
    return (scores - mean) / std

"""kNN-VC (Baas, van Niekerk and Kamper, Interspeech 2023): any-to-any voice conversion without training.

Frames of a self-supervised model lie close together when they carry the same phone, whoever speaks. Each
frame of the source utterance is replaced by the mean of its k nearest frames (cosine similarity) among all
frames of the target speaker's reference speech, the *matching set*; a vocoder trained on the same features
turns the result into a wave. kNN-TTS's interpolation keeps part of the source:
y = λ·y_selected + (1 − λ)·y_source (λ = 1: plain kNN-VC, λ = 0: the source unchanged).

The matching set is built once per target (features of every reference file, their unit-normalised copy
for the cosine search). The search runs in blocks of query frames × matching frames with a running top-k, so
memory stays bounded by the block size however long the reference speech is: no full distance matrix.
"Prematched" vocoder training (`prematch`) replaces each training utterance's frames by their kNN average
over the same speaker's *other* utterances, so the vocoder learns to turn such averages into clean speech.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from speechrep.errors import ConfigError, SpeechrepError

QUERY_BLOCK = 1024  # source frames per block of the search
MATCH_BLOCK = 8192  # matching frames per block: a block pair holds QUERY_BLOCK × MATCH_BLOCK similarities


@dataclass
class MatchingSet:
    """A target speaker's reference frames (N, H) and their unit-norm copy used for the cosine search."""

    features: Tensor
    normalised: Tensor

    @classmethod
    def from_features(cls, utterances: Sequence[Tensor]) -> MatchingSet:
        """The matching set of some utterances' frames (each (T_i, H))."""
        if not utterances or sum(len(u) for u in utterances) == 0:
            raise SpeechrepError("kNN-VC: the reference speech has no frames")
        features = torch.cat([u.float() for u in utterances])
        return cls(features, F.normalize(features, dim=-1))

    def __len__(self) -> int:
        return len(self.features)


def top_k_neighbours(queries: Tensor, matching: MatchingSet, k: int) -> Tensor:
    """Indices (T, k') of the k' = min(k, N) most cosine-similar matching frames of each query frame."""
    if k < 1:
        raise ConfigError(f"kNN-VC: k must be >= 1, got {k}")
    k = min(k, len(matching))
    queries = F.normalize(queries.float(), dim=-1)
    result = torch.empty(len(queries), k, dtype=torch.long)
    for q0 in range(0, len(queries), QUERY_BLOCK):
        block = queries[q0:q0 + QUERY_BLOCK]
        best_sim = torch.full((len(block), 0), float("-inf"))
        best_idx = torch.empty((len(block), 0), dtype=torch.long)
        for m0 in range(0, len(matching), MATCH_BLOCK):
            sims = block @ matching.normalised[m0:m0 + MATCH_BLOCK].T
            sims, idx = torch.cat([best_sim, sims], 1), torch.cat(
                [best_idx, torch.arange(m0, m0 + sims.shape[1]).expand(len(block), -1)], 1)
            best_sim, pos = sims.topk(k, dim=1)
            best_idx = idx.gather(1, pos)
        result[q0:q0 + QUERY_BLOCK] = best_idx
    return result


def knn_convert(source: Tensor, matching: MatchingSet, k: int = 4, lam: float = 1.0) -> Tensor:
    """Source frames (T, H) → λ·(mean of each frame's k nearest matching frames) + (1 − λ)·source."""
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"kNN-VC: lambda must lie in [0, 1], got {lam}")
    if source.shape[-1] != matching.features.shape[-1]:
        raise ConfigError(f"kNN-VC: source frames have {source.shape[-1]} dimensions, the matching set "
                          f"{matching.features.shape[-1]}: use the same upstream and layer for both")
    selected = matching.features[top_k_neighbours(source, matching, k)].mean(1)
    return lam * selected + (1.0 - lam) * source.float()


def prematch(features: dict[str, Tensor], speaker_of: dict[str, str], k: int = 4) -> dict[str, Tensor]:
    """Each utterance's frames replaced by their kNN average over its speaker's other utterances.

    An utterance whose speaker has no other utterance keeps its own frames (there is nothing to match with).
    """
    by_speaker: dict[str, list[str]] = {}
    for utt in sorted(features):
        by_speaker.setdefault(speaker_of[utt], []).append(utt)
    out = {}
    for utts in by_speaker.values():
        for utt in utts:
            others = [features[u] for u in utts if u != utt]
            out[utt] = knn_convert(features[utt], MatchingSet.from_features(others), k) if others \
                else features[utt].float()
    return out

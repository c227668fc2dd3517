"""Linear CKA of an upstream's hidden states with log-mel frames, phone identity and word identity.

    cka = linear_cka(x, y)                             # (n, p) and (n, q) arrays over the same n frames
    result = layer_similarity(source, dev_cuts, max_frames=4000, seed=0)
    result["targets"]["phone"][k]                      # CKA of hidden state k with one-hot phone identity

CKA (Kornblith et al. 2019) compares two representations of the same n frames through their linear Gram
matrices K = X Xᵀ and L = Y Yᵀ: CKA = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)). It is 1 for identical
representations and unchanged by an orthogonal transform or an isotropic scaling of either side.

Estimator: the unbiased HSIC of Song et al. (2012) (as in Nguyen, Raghu and Kornblith 2021), on
column-centred features, computed in feature space without forming the n×n Gram matrices. With K̃ and L̃
the Gram matrices with their diagonals zeroed,

    HSIC_u(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).

The standard estimator (tr(KHLH), H the centring matrix) grows with the widths p and q of the two sides
relative to n, about sqrt(pq)/n for independent features (0.12 for 768 random features against 400 random
classes on 4000 frames); the unbiased one stays near 0 for them, so layers and targets of different widths
(80 log-mel bins, a few dozen phones, hundreds of words) stay comparable. It can be slightly negative.

Frames: a seeded sample of at most `max_frames` frames of the given cuts (the probe uses the dev split of a
subset with phone and word alignments). Upstream frame j sits at the centre of its receptive field
(`FrameGeometry.centre_samples`); it takes the log-mel frame whose centre is nearest (80 Kaldi bins, 25 ms
windows every 10 ms, no normalisation: the `fbank_raw` baseline) and the phone and the word whose aligned
segment contains its centre, `<sil>` outside every segment (a class of its own).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch import Tensor

from speechrep.downstream.features import FeatureBatch, FeatureSource, run_upstream
from speechrep.errors import SpeechrepError
from speechrep.upstream.baselines import FeatureBaseline, fbank_raw

ESTIMATOR = "linear CKA, unbiased HSIC (Song et al. 2012), column-centred features"
TARGETS = {"log-mel": None, "phone": "phone_alignment", "word": "word_alignment"}  # target → alignment key
SILENCE = "<sil>"
BATCH_SECONDS = 100.0  # audio per batch of hidden states read from the cache

Alignment = list[tuple[str, float, float]]


# ---------------------------------------------------------------------------------------------- the estimator

def _hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC of the linear kernels of x (n, p) and y (n, q) in O(n·p·q) (module docstring)."""
    n = x.shape[0]
    diag_x, diag_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)  # diagonals of K and L
    trace = float(np.sum((x.T @ y) ** 2) - diag_x @ diag_y)  # tr(K̃ L̃)
    row_x, row_y = x @ x.sum(0) - diag_x, y @ y.sum(0) - diag_y  # K̃1 and L̃1
    return (trace + row_x.sum() * row_y.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(row_x @ row_y)) \
        / (n * (n - 3))


def _centred(a: np.ndarray | Tensor) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"CKA takes (frames, features) matrices, got shape {a.shape}")
    return a - a.mean(0)


def _ratio(cross: float, self_x: float, self_y: float) -> float:
    return cross / float(np.sqrt(self_x * self_y)) if self_x > 0 and self_y > 0 else float("nan")


def linear_cka(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Linear CKA of two representations of the same n ≥ 4 frames (rows), with the unbiased HSIC estimator;
    NaN when a side is constant."""
    x, y = _centred(x), _centred(y)
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"CKA needs the same number (≥ 4) of frames on both sides, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    return _ratio(_hsic(x, y), _hsic(x, x), _hsic(y, y))


def cka_table(layers: Sequence[np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Target name → CKA of each layer with it (each side's self-HSIC computed once)."""
    centred = [_centred(h) for h in layers]
    self_terms = [_hsic(h, h) for h in centred]
    table = {}
    for name, target in targets.items():
        t = _centred(target)
        self_t = _hsic(t, t)
        table[name] = [round(_ratio(_hsic(h, t), s, self_t), 6) for h, s in zip(centred, self_terms)]
    return table


# ------------------------------------------------------------------------------------------- frame targets

def alignment(cut: Any, key: str) -> Alignment | None:
    """The `[label, start_s, end_s]` segments of `custom[key]` of a cut's first supervision, by start time;
    None when the cut has none."""
    custom = (cut.supervisions[0].custom or {}) if cut.supervisions else {}
    raw = custom.get(key)
    if raw is None:
        return None
    try:
        segments = [(str(label), float(start), float(end)) for label, start, end in raw]
    except (TypeError, ValueError):
        raise SpeechrepError(f"cut {cut.id!r}: custom[{key!r}] must be [label, start_s, end_s] triples, "
                             f"got {str(raw)[:80]}") from None
    return sorted(segments, key=lambda s: s[1])


def labels_at(segments: Alignment, times: np.ndarray) -> np.ndarray:
    """The label of the segment containing each time (seconds), `<sil>` where none does."""
    labels = np.full(len(times), SILENCE, dtype=object)
    if segments:
        starts = np.array([s for _, s, _ in segments])
        ends = np.array([e for _, _, e in segments])
        names = np.array([label for label, _, _ in segments], dtype=object)
        seg = np.searchsorted(starts, times, side="right") - 1  # the last segment starting at or before
        inside = (seg >= 0) & (times < ends[np.clip(seg, 0, None)])
        labels[inside] = names[seg[inside]]
    return labels


def nearest(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the nearest value of the sorted `grid` for each point."""
    if len(grid) == 1:
        return np.zeros(len(points), dtype=np.int64)
    right = np.clip(np.searchsorted(grid, points), 1, len(grid) - 1)
    left = right - 1
    return np.where(points - grid[left] <= grid[right] - points, left, right)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(n, classes) float64 one-hot matrix of string labels."""
    _, index = np.unique(labels.astype(str), return_inverse=True)
    return np.eye(int(index.max()) + 1)[index]


def log_mel_at(mel: FeatureBaseline, cut: Any, centres: np.ndarray) -> np.ndarray:
    """(len(centres), 80) log-mel frames of a cut nearest to each centre (in samples)."""
    audio = torch.from_numpy(np.ascontiguousarray(cut.load_audio()[0])).float()
    with torch.inference_mode():
        feats = mel(audio[None], torch.tensor([audio.numel()])).hidden_states[0][0]
    grid = mel.frame_geometry.centre_samples(feats.shape[0]).numpy()
    return feats[torch.from_numpy(nearest(grid, centres))].numpy()


# ------------------------------------------------------------------------------------------------- the sweep

def _hidden_states(source: FeatureSource, batch: FeatureBatch) -> tuple[list[Tensor], Tensor]:
    """The batch's hidden states: from the feature cache, or the upstream run now."""
    if batch.hidden_states is not None:
        return batch.hidden_states, batch.lengths
    upstream, device = source.upstream.to(source.device).eval(), source.device
    with torch.inference_mode():
        states, lengths = run_upstream(upstream, batch.wavs.to(device), batch.wav_lens.to(device))
    return [h.cpu() for h in states], lengths.cpu()


def sample_frames(counts: Sequence[int], max_frames: int, seed: int) -> np.ndarray:
    """Sorted global indices of a seeded sample of at most `max_frames` of sum(counts) frames."""
    total = int(sum(counts))
    return np.sort(np.random.default_rng(seed).choice(total, size=min(total, max_frames), replace=False))


def layer_similarity(source: FeatureSource, cuts: CutSet, max_frames: int = 4000,
                     seed: int = 0) -> dict[str, Any]:
    """CKA of every hidden state of `source` with log-mel, phone and word identity on frames of `cuts`.

    Returns `{"estimator", "frames", "cuts", "max_frames", "seed", "classes": {target: count},
    "targets": {target: [CKA per hidden state] | None}, "missing": {target: why it is None}}`; a target is
    None when a cut has no alignment for it (`phone_alignment`, `word_alignment` in `custom`)."""
    upstream = source.upstream
    geometry, rate = upstream.frame_geometry, int(getattr(upstream, "sample_rate", 16000))
    cuts = cuts.to_eager()
    counts = {cut.id: geometry.num_frames(cut.num_samples) for cut in cuts}
    starts = dict(zip(counts, np.cumsum([0, *counts.values()])[:-1].tolist()))
    chosen = sample_frames(list(counts.values()), max_frames, seed)
    mel = fbank_raw()
    layers: list[list[np.ndarray]] = [[] for _ in source.hidden_sizes]
    columns: dict[str, list[np.ndarray]] = {name: [] for name in TARGETS}
    missing: dict[str, str] = {}
    for batch in source.batches(cuts, BATCH_SECONDS, shuffle=False)(0):
        states, lengths = _hidden_states(source, batch)
        for i, cut in enumerate(batch.cuts):
            n, start = min(int(lengths[i]), counts[cut.id]), starts[cut.id]
            picked = chosen[np.searchsorted(chosen, start):np.searchsorted(chosen, start + n)] - start
            if not len(picked):
                continue
            for k, h in enumerate(states):
                layers[k].append(h[i, torch.from_numpy(picked)].float().numpy())
            centres = geometry.centre_samples(n).numpy()[picked]
            columns["log-mel"].append(log_mel_at(mel, cut, centres))
            for name, key in TARGETS.items():
                if key is None or name in missing:
                    continue
                segments = alignment(cut, key)
                if segments is None:
                    missing[name] = f"cut {cut.id!r} has no custom[{key!r}]"
                else:
                    columns[name].append(labels_at(segments, centres / rate))
    frames = sum(len(part) for part in layers[0])
    if frames < 4:
        raise SpeechrepError(f"layer similarity: {frames} frames in {len(cuts)} cuts; CKA needs at least 4")
    targets = {"log-mel": np.concatenate(columns["log-mel"])}
    targets |= {name: one_hot(np.concatenate(columns[name])) for name in TARGETS
                if name != "log-mel" and name not in missing}
    table = cka_table([np.concatenate(parts) for parts in layers], targets)
    return {"estimator": ESTIMATOR, "frames": frames, "cuts": len(cuts), "max_frames": max_frames,
            "seed": seed, "classes": {name: targets[name].shape[1] for name in targets if name != "log-mel"},
            "targets": {name: table.get(name) for name in TARGETS}, "missing": missing}

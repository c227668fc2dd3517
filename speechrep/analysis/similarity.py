"""Linear CKA, SVCCA and PWCCA of an upstream's hidden states with log-mel frames, phone, word and speaker
identity and pitch.

    cka = linear_cka(x, y)                             # (n, p) and (n, q) arrays over the same n frames
    rho = cca(x, y); svcca(x, y); pwcca(layer, y)      # canonical correlations and their two summaries
    result = layer_similarity(source, dev_cuts, max_frames=4000, seed=0)
    result["targets"]["phone"][k]                      # CKA of hidden state k with one-hot phone identity
    result["cca"]["pwcca"]["pitch"][k]                 # PWCCA of hidden state k with log-F0 (voiced frames)

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

CCA: the canonical correlations of X and Y are the singular values of Qxᵀ Qy, Qx and Qy orthonormal bases
of the column spaces of the centred X and Y from their thin SVDs (Björck and Golub 1973): no covariance is
inverted, so rank-deficient sides (a one-hot target has rank classes − 1; a layer may have dead or
collinear units) need no regularisation; directions with a singular value under n·eps·s_max are dropped.
Unlike CKA, CCA is invariant to any invertible linear transform of either side.
- SVCCA (Raghu et al. 2017): each side reduced to its leading singular directions holding 99 % of its
  variance, then the mean of all canonical correlations.
- PWCCA (Morcos et al. 2018): CCA on the full-rank bases; canonical correlation ρ_i weighted by
  α_i = Σ_j |⟨h_i, x_j⟩|, h_i the i-th (unit) canonical variate in the layer and x_j the layer's centred
  units: how much of the layer the direction accounts for. The layer is the weighted side (Morcos et al.'s
  code weights the side with fewer units; here the question is always "how much of the layer").
In-sample canonical correlations are biased upwards when the widths are not small against n: for
independent data each of them is about sqrt(p/n) (0.43 for 768 random features on 4000 frames), whatever
the other side. `similarity_table` therefore also reports each CCA measure with the target's frames
shuffled (`chance:svcca`, `chance:pwcca`); read a CCA value against that level, and sample many more frames
than the layer is wide. CKA with the unbiased HSIC needs no such baseline.

Targets, per frame: the log-mel frame, one-hot phone, word and speaker identity, and pitch (log2 F0 of
`speechrep.audio.pitch_track` on the upstream's frame grid). Pitch is compared on the voiced frames only,
as one column: log-F0 is undefined elsewhere, and a voicing bit would add a phonetic feature (voiced vs
voiceless) that the phone target already measures. Energy is not a target of its own: the log-mel frame
carries it. Absolute log-F0 mixes the speaker's register (eSpeak variants differ by up to two octaves)
with intonation, so pitch and speaker similarity are not independent.

Frames: a seeded sample of at most `max_frames` frames of the given cuts (the probe uses the dev split of a
subset with phone and word alignments). Upstream frame j sits at the centre of its receptive field
(`FrameGeometry.centre_samples`); it takes the log-mel frame whose centre is nearest (80 Kaldi bins, 25 ms
windows every 10 ms, no normalisation: the `fbank_raw` baseline), the phone and the word whose aligned
segment contains its centre, `<sil>` outside every segment (a class of its own), its cut's speaker, and the
tracker's F0 at its centre (tracked over every frame of the cut, then sampled).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch import Tensor

from speechrep.audio import pitch_track
from speechrep.downstream.features import FeatureBatch, FeatureSource, run_upstream
from speechrep.errors import SpeechrepError
from speechrep.upstream.baselines import FeatureBaseline, fbank_raw

ESTIMATOR = "linear CKA, unbiased HSIC (Song et al. 2012), column-centred features"
SVCCA_VARIANCE = 0.99  # SVCCA keeps the singular directions of each side that hold this share of its variance
MEASURES = ("cka", "svcca", "pwcca", "chance:svcca", "chance:pwcca")
TARGETS = {  # target → what it is, per frame
    "log-mel": "the 80 log-mel bins of the nearest 10 ms frame",
    "phone": "one-hot phone identity (custom phone_alignment)",
    "word": "one-hot word identity (custom word_alignment)",
    "speaker": "one-hot speaker identity of the cut (its supervision's speaker)",
    "pitch": "log2 F0 of pitch_track, voiced frames only",
}
ALIGNMENTS = {"phone": "phone_alignment", "word": "word_alignment"}  # target → custom key of its segments
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


# ------------------------------------------------------------------------------------------------------ CCA

def _bases(a: np.ndarray, keep_variance: float = SVCCA_VARIANCE) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal bases of the column space of the column-centred `a` (n, p), from one thin SVD: every
    direction above the numerical rank threshold (for CCA, PWCCA), and only the leading ones that hold
    `keep_variance` of the variance (SVCCA's reduction)."""
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    if not len(s) or s[0] <= 0:
        return u[:, :0], u[:, :0]
    rank = int(np.sum(s > s[0] * max(a.shape) * np.finfo(np.float64).eps))
    share = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
    return u[:, :rank], u[:, :min(rank, int(np.searchsorted(share, keep_variance - 1e-12)) + 1)]


def _canonical(qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) of two orthonormal bases and the x-side canonical variates
    (n, m), m = min(kx, ky): the SVD of Qxᵀ Qy (Björck and Golub 1973)."""
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    m = min(qx.shape[1], qy.shape[1])
    return np.clip(rho[:m], 0.0, 1.0), qx @ u[:, :m]


def _pwcca(x: np.ndarray, rho: np.ndarray, variates: np.ndarray) -> float:
    """Morcos et al.'s weighted mean of canonical correlations; weight of variate i: Σ_j |⟨h_i, x_j⟩| over
    the columns x_j of the (centred) layer x."""
    weights = np.abs(variates.T @ x).sum(1)
    return float(weights @ rho / weights.sum()) if len(rho) and weights.sum() > 0 else float("nan")


def _check_pair(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    x, y = _centred(x), _centred(y)
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"CCA needs the same number (≥ 4) of frames on both sides, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    return x, y


def cca(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> np.ndarray:
    """All canonical correlations of x (n, p) and y (n, q), descending (min of the two ranks of them)."""
    x, y = _check_pair(x, y)
    return _canonical(_bases(x)[0], _bases(y)[0])[0]


def svcca(x: np.ndarray | Tensor, y: np.ndarray | Tensor, keep_variance: float = SVCCA_VARIANCE) -> float:
    """SVCCA (Raghu et al. 2017): the mean canonical correlation after reducing each side to the singular
    directions holding `keep_variance` of its variance; NaN when a side is constant."""
    x, y = _check_pair(x, y)
    rho = _canonical(_bases(x, keep_variance)[1], _bases(y, keep_variance)[1])[0]
    return float(rho.mean()) if len(rho) else float("nan")


def pwcca(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """PWCCA (Morcos et al. 2018) of the layer x with y: the canonical correlations weighted by how much of
    x each canonical variate accounts for (not symmetric; NaN when a side is constant)."""
    x, y = _check_pair(x, y)
    return _pwcca(x, *_canonical(_bases(x)[0], _bases(y)[0]))


def similarity_table(layers: Sequence[np.ndarray], targets: dict[str, np.ndarray],
                     seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Measure → target → value per layer, for CKA, SVCCA and PWCCA (the layer is PWCCA's weighted side), and
    `chance:svcca`, `chance:pwcca`: the same with the target's frames in a seeded random order (what CCA
    finds in unrelated data of these widths and frame count; near 0 for n ≫ widths). Each side's SVD and
    self-HSIC is computed once; the layers are visited one at a time (memory: one layer's bases)."""
    n = len(layers[0])
    order = np.random.default_rng(seed).permutation(n)
    prepared = {}
    for name, target in targets.items():
        t = _centred(target)
        full, reduced = _bases(t)
        prepared[name] = (t, _hsic(t, t), full, reduced, full[order], reduced[order])
    table: dict[str, dict[str, list[float]]] = {m: {name: [] for name in targets} for m in MEASURES}
    for layer in layers:
        h = _centred(layer)
        self_h = _hsic(h, h)
        full, reduced = _bases(h)
        for name, (t, self_t, t_full, t_reduced, t_full_perm, t_reduced_perm) in prepared.items():
            values = {"cka": _ratio(_hsic(h, t), self_h, self_t)}
            for suffix, tf, tr in (("", t_full, t_reduced), ("chance:", t_full_perm, t_reduced_perm)):
                rho = _canonical(reduced, tr)[0]
                values[suffix + "svcca"] = float(rho.mean()) if len(rho) else float("nan")
                values[suffix + "pwcca"] = _pwcca(h, *_canonical(full, tf))
            for measure, value in values.items():
                table[measure][name].append(float(round(value, 6)))
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


def log_mel_at(mel: FeatureBaseline, audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(len(centres), 80) log-mel frames of mono audio nearest to each centre (in samples)."""
    audio = torch.from_numpy(np.ascontiguousarray(audio)).float()
    with torch.inference_mode():
        feats = mel(audio[None], torch.tensor([audio.numel()])).hidden_states[0][0]
    grid = mel.frame_geometry.centre_samples(feats.shape[0]).numpy()
    return feats[torch.from_numpy(nearest(grid, centres))].numpy()


def log_f0_at(audio: np.ndarray, rate: int, centres: np.ndarray, hop: int) -> np.ndarray:
    """log2 F0 of `pitch_track` on frames centred at `centres` (samples), NaN on unvoiced frames."""
    track = pitch_track(audio, rate, hop=hop, centres=centres)
    return np.where(track.voiced, np.log2(np.where(track.voiced, track.f0_hz, 1.0)), np.nan)


# ------------------------------------------------------------------------------------------------- the sweep

def _hidden_states(source: FeatureSource, batch: FeatureBatch) -> tuple[list[Tensor], Tensor]:
    """The batch's hidden states: from the feature cache, or the upstream run now."""
    if batch.hidden_states is not None:
        return batch.hidden_states, batch.lengths
    upstream, device = source.upstream.to(source.device).eval(), source.device
    with torch.inference_mode():
        states, lengths = run_upstream(upstream, batch.wavs.to(device), batch.wav_lens.to(device))
    return [h.cpu() for h in states], lengths.cpu()


def frame_sample(upstream: Any, cuts: CutSet, max_frames: int, seed: int
                 ) -> tuple[CutSet, dict[str, int], dict[str, int], np.ndarray]:
    """(the cuts, eager; frames per cut on `upstream`'s frame grid; each cut's first index in the
    concatenation; the sampled indices into it, `sample_frames`)."""
    cuts = cuts.to_eager()
    counts = {cut.id: upstream.frame_geometry.num_frames(cut.num_samples) for cut in cuts}
    starts = dict(zip(counts, np.cumsum([0, *counts.values()])[:-1].tolist()))
    return cuts, counts, starts, sample_frames(list(counts.values()), max_frames, seed)


def sample_frames(counts: Sequence[int], max_frames: int, seed: int) -> np.ndarray:
    """Sorted global indices of a seeded sample of at most `max_frames` of sum(counts) frames."""
    total = int(sum(counts))
    return np.sort(np.random.default_rng(seed).choice(total, size=min(total, max_frames), replace=False))


def layer_similarity(source: FeatureSource, cuts: CutSet, max_frames: int = 4000,
                     seed: int = 0) -> dict[str, Any]:
    """CKA, SVCCA and PWCCA of every hidden state of `source` with each of TARGETS on frames of `cuts`.

    Returns `{"estimator", "frames", "pitch_frames", "cuts", "max_frames", "seed", "classes": {target:
    count}, "targets": {target: [CKA per hidden state] | None}, "cca": {measure: {target: [value per hidden
    state]}} for svcca, pwcca and their chance levels, "missing": {target: why it is None}}`. A target is
    None when a cut lacks what it needs (`phone_alignment`, `word_alignment` in `custom`, a speaker) or,
    for pitch, when fewer than 4 sampled frames are voiced; pitch is measured on the voiced frames only."""
    upstream = source.upstream
    geometry, rate = upstream.frame_geometry, int(getattr(upstream, "sample_rate", 16000))
    cuts, counts, starts, chosen = frame_sample(upstream, cuts, max_frames, seed)
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
            all_centres = geometry.centre_samples(n).numpy()
            centres, audio = all_centres[picked], cut.load_audio()[0]
            columns["log-mel"].append(log_mel_at(mel, audio, centres))
            # the whole cut's grid: the tracker smooths over neighbouring frames
            columns["pitch"].append(log_f0_at(audio, cut.sampling_rate, all_centres, geometry.stride)[picked])
            for name, key in ALIGNMENTS.items():
                if name in missing:
                    continue
                segments = alignment(cut, key)
                if segments is None:
                    missing[name] = f"cut {cut.id!r} has no custom[{key!r}]"
                else:
                    columns[name].append(labels_at(segments, centres / rate))
            speaker = cut.supervisions[0].speaker if cut.supervisions else None
            if speaker is None:
                missing.setdefault("speaker", f"cut {cut.id!r} has no speaker")
            columns["speaker"].append(np.full(len(picked), str(speaker), dtype=object))
    frames = sum(len(part) for part in layers[0])
    if frames < 4:
        raise SpeechrepError(f"layer similarity: {frames} frames in {len(cuts)} cuts; CKA needs at least 4")
    hidden = [np.concatenate(parts) for parts in layers]
    targets = {"log-mel": np.concatenate(columns["log-mel"])}
    targets |= {name: one_hot(np.concatenate(columns[name])) for name in (*ALIGNMENTS, "speaker")
                if name not in missing}
    table = similarity_table(hidden, targets, seed)
    log_f0 = np.concatenate(columns["pitch"])
    voiced = ~np.isnan(log_f0)
    if voiced.sum() >= 4:
        pitch = similarity_table([h[voiced] for h in hidden], {"pitch": log_f0[voiced, None]}, seed)
        for measure, values in pitch.items():
            table[measure] |= values
    else:
        missing["pitch"] = f"{int(voiced.sum())} of {frames} sampled frames are voiced (need 4)"
    return {"estimator": ESTIMATOR, "frames": frames, "pitch_frames": int(voiced.sum()), "cuts": len(cuts),
            "max_frames": max_frames, "seed": seed,
            "classes": {name: targets[name].shape[1] for name in targets if name != "log-mel"},
            "targets": {name: table["cka"].get(name) for name in TARGETS},
            "cca": {measure: {name: table[measure].get(name) for name in TARGETS}
                    for measure in MEASURES if measure != "cka"},
            "missing": missing}

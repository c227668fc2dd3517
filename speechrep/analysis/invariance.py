"""Noise invariance per layer: do k-means clusters of a layer's frames follow the distortion or the phone?

    conditions = parse_conditions("clean,noise:snr=0,reverb:rt60=0.8")
    result = layer_invariance(source, cuts, conditions, k=50, max_frames=2000, seed=0)
    result["nmi"]["condition"][k]        # NMI of hidden state k's clusters with the condition (low: robust)
    result["nmi"]["phone"][k]            # ... with the phone (high: clusters are phonetic)
    result["nmi"]["chance:condition"][k] # the same clusters against shuffled condition labels

The JSALT robustness analysis found that HuBERT's and DistilHuBERT's frames cluster by noise condition while
a cross-distortion-mapping student's do not. Here every cut is rendered under each condition
(`speechrep.audio.conditions`, deterministic per cut) and each rendering is run through the upstream. A
seeded sample of at most `max_frames` frame positions (cut, frame) is drawn once, and each sampled position
contributes its frame under every condition, so the conditions are balanced and compare the same speech.
For each hidden state, k-means (scikit-learn's MiniBatchKMeans, seeded) is fitted on all those frames. The
cluster of each frame is then compared with its condition and with its phone by normalised mutual information,

    NMI(z, y) = I(z; y) / ((H(z) + H(y)) / 2)        (scikit-learn's `normalized_mutual_info_score`)

0 when the clusters say nothing about the label, 1 when they determine it and it determines them. The phone of
a frame is the phone whose aligned segment (`custom["phone_alignment"]`) contains the centre of the frame's
receptive field, or `<sil>` outside every segment. Since every condition here keeps the length, it is the
same phone under every condition; `speed` changes the length and is refused. NMI on finitely many frames
with k clusters is biased upwards, so each value comes with a chance level: NMI against the same labels
shuffled among the frames (seeded). Read a value against its chance level.

A picture beside the numbers: `projection_layer` (default: the last hidden state) gets a 2-D t-SNE
(scikit-learn, seeded, PCA initialisation) of a seeded sample of at most `projection_points` of its frames,
drawn across conditions, stored with each point's condition and phone; the report colours it both ways.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from torch import Tensor

from speechrep.analysis.similarity import ALIGNMENTS, alignment, frame_sample, labels_at
from speechrep.audio.conditions import Condition, distortions_only
from speechrep.downstream.features import FeatureSource, condition_others, run_upstream
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.storage import atomic_write_json

log = logging.getLogger(__name__)

BATCH_SECONDS = 100.0  # audio per upstream forward
MEASURES = ("condition", "phone", "chance:condition", "chance:phone")
METHOD = ("k-means (MiniBatchKMeans) on each hidden state's frames of every condition; NMI with the "
          "arithmetic mean of the entropies (sklearn normalized_mutual_info_score); chance: labels shuffled")


def check_conditions(conditions: Sequence[Condition]) -> None:
    """One-line ConfigErrors for condition lists the analysis cannot use."""
    if len(conditions) < 2:
        raise ConfigError("invariance: give at least two conditions (e.g. clean,noise:snr=0)")
    distortions_only(conditions, "invariance")
    changing = [str(c) for c in conditions if c.kind == "speed"]
    if changing:
        raise ConfigError(f"invariance: condition {changing[0]!r} changes the length, so its frames would "
                          "not line up with the other conditions' (use noise, babble, reverb, telephone, "
                          "clip, codec, pitch or dropout)")


def nmi(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean of the entropies) of two labellings of the frames."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(labels).astype(str), clusters))


def cluster(frames: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means cluster of each frame (MiniBatchKMeans, seeded; k at most the number of frames)."""
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=min(k, len(frames)), init="k-means++", n_init=3, max_iter=100,
                            batch_size=4096, random_state=seed)
    return model.fit_predict(frames.astype(np.float32))


def _states(source: FeatureSource, wavs: Tensor, wav_lens: Tensor) -> tuple[list[Tensor], Tensor]:
    upstream, device = source.upstream.to(source.device).eval(), source.device
    with torch.inference_mode():
        states, lengths = run_upstream(upstream, wavs.to(device), wav_lens.to(device))
    return [h.float().cpu() for h in states], lengths.cpu()


def project(frames: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) t-SNE coordinates of frames (N, D) (sklearn; seeded; PCA start; perplexity ≤ (N − 1) / 3)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(frames) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(frames.astype(np.float32))


def _projection(frames: np.ndarray, condition_labels: np.ndarray, phone_labels: np.ndarray | None, layer: int,
                points: int, seed: int) -> dict[str, Any]:
    """A seeded sample of at most `points` frames of one hidden state, projected to 2-D, with their labels."""
    rng = np.random.default_rng(seed + 1)
    keep = np.sort(rng.choice(len(frames), size=min(points, len(frames)), replace=False))
    xy = project(frames[keep], seed)
    return {"layer": layer, "method": "t-SNE (sklearn, PCA init)", "xy": np.round(xy, 3).tolist(),
            "condition": condition_labels[keep].tolist(),
            "phone": None if phone_labels is None else phone_labels[keep].tolist()}


def layer_invariance(source: FeatureSource, cuts: CutSet, conditions: Sequence[Condition], k: int = 50,
                     max_frames: int = 2000, seed: int = 0, projection_layer: int = -1,
                     projection_points: int = 800) -> dict[str, Any]:
    """Per hidden state of `source`: NMI of k-means clusters of its frames under `conditions` with the
    condition and with the phone (see the module docstring).

    Returns `{"method", "conditions", "k", "positions", "frames", "cuts", "seed", "nmi": {measure: [value per
    hidden state] | None}, "missing": {label: why it is None}, "projection": {"layer", "method", "xy",
    "condition" (index into conditions), "phone"} | None}`; `positions` frame positions, each under every
    condition, make the `frames` clustered per hidden state. The phone is None when a cut has no
    `custom["phone_alignment"]`; the projection is None when `projection_points` is 0."""
    check_conditions(conditions)
    if k < 2:
        raise ConfigError(f"invariance: k={k}: at least 2 clusters")
    if projection_points < 0 or projection_points == 1:
        raise ConfigError(f"invariance: projection_points={projection_points}: 0 (none) or at least 2")
    layers_count = len(source.hidden_sizes)
    if not -layers_count <= projection_layer < layers_count:
        raise ConfigError(f"invariance: projection layer {projection_layer}: {source.name} has hidden states "
                          f"0..{layers_count - 1}")
    upstream = source.upstream
    geometry, rate = upstream.frame_geometry, int(getattr(upstream, "sample_rate", 16000))
    cuts, counts, starts, chosen = frame_sample(upstream, cuts, max_frames, seed)
    if len(chosen) < 2:
        raise SpeechrepError(f"invariance: {len(chosen)} frames in {len(cuts)} cuts; need at least 2")
    others = condition_others(cuts)
    # per condition, per hidden state: the sampled frames in `chosen` order
    per_condition: list[list[np.ndarray]] = []
    phones: np.ndarray | None = np.full(len(chosen), "", dtype=object)
    missing: dict[str, str] = {}
    for index, condition in enumerate(conditions):
        log.info("invariance: %s under %s", source.name, condition)
        layers = [np.zeros((len(chosen), size), dtype=np.float32) for size in source.hidden_sizes]
        for batch in source.batches(cuts, BATCH_SECONDS, shuffle=False, live=True, condition=condition,
                                    others=others)(0):
            states, lengths = _states(source, batch.wavs, batch.wav_lens)
            for i, cut in enumerate(batch.cuts):
                n, start = min(int(lengths[i]), counts[cut.id]), starts[cut.id]
                lo, hi = np.searchsorted(chosen, start), np.searchsorted(chosen, start + n)
                if lo == hi:
                    continue
                picked = torch.from_numpy(chosen[lo:hi] - start)
                for layer, h in zip(layers, states):
                    layer[lo:hi] = h[i, picked].numpy()
                if index == 0 and phones is not None:
                    segments = alignment(cut, ALIGNMENTS["phone"])
                    if segments is None:
                        missing["phone"] = f"cut {cut.id!r} has no custom['phone_alignment']"
                        phones = None
                    else:
                        centres = geometry.centre_samples(counts[cut.id]).numpy()[picked.numpy()]
                        phones[lo:hi] = labels_at(segments, centres / rate)
        per_condition.append(layers)
    condition_labels = np.repeat(np.arange(len(conditions)), len(chosen))
    rng = np.random.default_rng(seed)
    shuffled_condition = rng.permutation(condition_labels)
    phone_labels = None if phones is None else np.tile(phones.astype(str), len(conditions))
    shuffled_phone = None if phone_labels is None else rng.permutation(phone_labels)
    table: dict[str, list[float] | None] = {m: [] for m in MEASURES}
    if phone_labels is None:
        table["phone"] = table["chance:phone"] = None
    for k_layer in range(len(source.hidden_sizes)):
        frames = np.concatenate([layers[k_layer] for layers in per_condition])
        assigned = cluster(frames, k, seed)
        table["condition"].append(round(nmi(assigned, condition_labels), 6))
        table["chance:condition"].append(round(nmi(assigned, shuffled_condition), 6))
        if phone_labels is not None:
            table["phone"].append(round(nmi(assigned, phone_labels), 6))
            table["chance:phone"].append(round(nmi(assigned, shuffled_phone), 6))
    projection = None
    if projection_points:
        layer = projection_layer % layers_count
        frames = np.concatenate([layers[layer] for layers in per_condition])
        projection = _projection(frames, condition_labels, phone_labels, layer, projection_points, seed)
    return {"method": METHOD, "conditions": [str(c) for c in conditions], "k": k, "positions": len(chosen),
            "frames": len(chosen) * len(conditions), "cuts": len(cuts), "seed": seed, "nmi": table,
            "missing": missing, "projection": projection}


def run_invariance(upstreams: Sequence[str], corpus: Path, conditions: Sequence[str], out: Path,
                   subset: str = "pr", split: str = "dev", k: int = 50, max_frames: int = 2000,
                   max_cuts: int | None = 200, seed: int = 0, device: str = "cpu", projection_layer: int = -1,
                   projection_points: int = 800) -> dict[str, Any]:
    """`speechrep analyze invariance`: `layer_invariance` of each upstream on (a seeded share of at most
    `max_cuts` cuts of) CORPUS/SUBSET/SPLIT; written to `out` (JSON) and returned."""
    from speechrep.audio.conditions import parse_conditions
    from speechrep.data.batching import load_cuts
    from speechrep.downstream.runner import load_upstream_module, parse_upstream, upstream_identity

    parsed = parse_conditions(conditions)
    check_conditions(parsed)
    if max_cuts is not None and max_cuts < 1:
        raise ConfigError(f"--max-cuts {max_cuts}: at least 1")
    if max_frames < 2:
        raise ConfigError(f"--max-frames {max_frames}: at least 2")
    choices = [parse_upstream(name) for name in upstreams]
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--upstream: two upstreams share a name: {labels}")
    cuts = load_cuts(Path(corpus), subset, split).to_eager()
    if max_cuts is not None and len(cuts) > max_cuts:
        keep = np.sort(np.random.default_rng(seed).choice(len(cuts), size=max_cuts, replace=False))
        every = list(cuts)
        cuts = CutSet.from_cuts(every[i] for i in keep.tolist())
    result: dict[str, Any] = {"corpus": str(Path(corpus).resolve()), "subset": subset, "split": split,
                              "conditions": [str(c) for c in parsed], "k": k, "max_frames": max_frames,
                              "max_cuts": max_cuts, "seed": seed, "method": METHOD, "upstreams": {}}
    for choice in choices:
        upstream = load_upstream_module(choice)
        source = FeatureSource(choice.label, upstream, cache_root=None, device=device)
        entry = layer_invariance(source, cuts, parsed, k=k, max_frames=max_frames, seed=seed,
                                 projection_layer=projection_layer, projection_points=projection_points)
        entry["weights"] = upstream_identity(choice, upstream)
        for key in ("method", "conditions", "k", "seed"):  # the same for every upstream: kept at the top
            entry.pop(key)
        result["upstreams"][choice.label] = entry
    atomic_write_json(Path(out), result)
    return result


def format_invariance(result: dict[str, Any]) -> str:
    """A plain-text table per upstream: NMI of each hidden state's clusters with condition and phone."""
    lines = [f"conditions: {', '.join(result['conditions'])}; k={result['k']}; "
             f"{result['subset']}/{result['split']}"]
    for label, entry in result["upstreams"].items():
        table = entry["nmi"]
        lines.append(f"\n{label} ({entry['cuts']} cuts, {entry['positions']} frame positions x "
                     f"{len(result['conditions'])} conditions)")
        lines.append("layer  NMI condition (chance)  NMI phone (chance)")
        for layer, value in enumerate(table["condition"]):
            phone = "–" if table["phone"] is None else \
                f"{table['phone'][layer]:.3f} ({table['chance:phone'][layer]:.3f})"
            lines.append(f"{layer:>5}  {value:>13.3f} ({table['chance:condition'][layer]:.3f})  {phone:>18}")
    return "\n".join(lines) + "\n"

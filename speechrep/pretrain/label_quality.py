"""How well discrete frame labels (k-means clusters) match phones: the measures of HuBERT §IV-E.

Hsu et al. 2021 (https://arxiv.org/abs/2106.07447) read the joint distribution p(y, z) of phone y and cluster
z off aligned frames and report
- cluster purity  E_y[max_z p(z|y)] = Σ_y max_z p(y, z): how concentrated each phone is in one cluster;
- phone purity    E_z[max_y p(y|z)] = Σ_z max_y p(y, z): how concentrated each cluster is on one phone;
- PNMI            I(y; z) / H(y): the share of phone uncertainty a cluster label removes.
Frames outside every aligned phone count as the phone `<sil>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SILENCE = "<sil>"


@dataclass
class LabelQuality:
    """Purity and PNMI of one labelling against phones, with the counts they come from."""

    cluster_purity: float
    phone_purity: float
    pnmi: float
    frames: int
    phones: int  # distinct phones seen (silence included)
    clusters: int  # distinct clusters seen

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON reports."""
        return asdict(self)


def frame_phones(
    alignment: Sequence[Sequence[Any]], num_frames: int, frame_shift: float, phone_ids: dict[str, int]
) -> np.ndarray:
    """Phone id of each frame (the phone holding the frame centre, else `<sil>`); new phones get new ids."""
    phone_ids.setdefault(SILENCE, len(phone_ids))
    centres = (np.arange(num_frames) + 0.5) * frame_shift
    out = np.full(num_frames, phone_ids[SILENCE], dtype=np.int64)
    if not alignment:
        return out
    starts = np.array([float(s) for _, s, _ in alignment])
    ends = np.array([float(e) for _, _, e in alignment])
    ids = np.array([phone_ids.setdefault(str(p), len(phone_ids)) for p, _, _ in alignment])
    order = np.argsort(starts, kind="stable")
    starts, ends, ids = starts[order], ends[order], ids[order]
    segment = np.searchsorted(starts, centres, side="right") - 1  # last segment starting before the centre
    inside = (segment >= 0) & (centres < ends[np.clip(segment, 0, None)])
    out[inside] = ids[segment[inside]]
    return out


def joint_counts(phones: np.ndarray, clusters: np.ndarray, num_phones: int, num_clusters: int) -> np.ndarray:
    """(num_phones, num_clusters) co-occurrence counts of aligned frame labels."""
    if phones.shape != clusters.shape:
        raise ValueError(f"phones {phones.shape} and clusters {clusters.shape} must align frame by frame")
    flat = np.bincount(phones * num_clusters + clusters, minlength=num_phones * num_clusters)
    return flat.reshape(num_phones, num_clusters)


def quality_from_counts(counts: np.ndarray) -> LabelQuality:
    """Cluster purity, phone purity and PNMI of a (phones, clusters) count matrix."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no aligned frames to measure label quality on")
    joint = counts / total
    p_phone, p_cluster = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(p_phone, p_cluster)[nz])).sum())
    used_phones = p_phone[p_phone > 0]
    phone_entropy = float(-(used_phones * np.log(used_phones)).sum())
    return LabelQuality(
        cluster_purity=float(joint.max(1).sum()),
        phone_purity=float(joint.max(0).sum()),
        pnmi=mutual / phone_entropy if phone_entropy > 0 else 0.0,
        frames=int(total),
        phones=int((p_phone > 0).sum()),
        clusters=int((p_cluster > 0).sum()),
    )


def phone_alignment(cut: Any) -> list | None:
    """The cut's `custom["phone_alignment"]` ([phone, start_s, end_s], relative to the cut), or None."""
    for source in (getattr(cut, "custom", None), *(s.custom for s in getattr(cut, "supervisions", []))):
        if isinstance(source, Mapping) and "phone_alignment" in source:
            return source["phone_alignment"]
    return None


def label_quality(
    cuts: Iterable[Any], labels: Mapping[str, np.ndarray], frame_shift: float, num_clusters: int
) -> LabelQuality | None:
    """Quality of per-cut frame labels against the cuts' phone alignments; None when no cut is aligned."""
    phone_ids: dict[str, int] = {}
    phones, clusters = [], []
    for cut in cuts:
        alignment = phone_alignment(cut)
        if alignment is None or cut.id not in labels:
            continue
        frames = np.asarray(labels[cut.id], dtype=np.int64)
        phones.append(frame_phones(alignment, len(frames), frame_shift, phone_ids))
        clusters.append(frames)
    if not phones:
        return None
    counts = joint_counts(np.concatenate(phones), np.concatenate(clusters), len(phone_ids), num_clusters)
    return quality_from_counts(counts)

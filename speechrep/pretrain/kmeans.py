"""k-means targets for HuBERT-style pre-training: fit one dictionary on a sample of frames, label every
utterance.

    speechrep kmeans --features mfcc --data CORPUS --k 100 --out LABELS            # iteration 1
    speechrep kmeans --features RUN/upstream:6 --data CORPUS --k 500 --out LABELS2  # iteration 2, layer 6

Features: `mfcc` (13 Kaldi MFCC + Δ + ΔΔ, per-utterance CMVN; HuBERT's first iteration), `fbank` (40 log-mel,
per-utterance CMVN; MelHuBERT's first stage), or `UPSTREAM[:LAYER]`, a hub name or exported directory and a
hidden-state index (default: the last). Hand-crafted features run at 10 ms and are stacked `stride / 160`
frames at a time, so the labels come at the model's frame rate (`--stride`, default 320 = 20 ms); an
upstream's labels come at its own stride. The dictionary is scikit-learn's MiniBatchKMeans with HuBERT's
settings (k-means++, batch 10 000, 20 inits, no reassignment), fitted on the frames of a share of the train
utterances (at most `max_fit_frames`, sampled uniformly); one dictionary labels train and dev alike.

Output directory: `kmeans.json` (k, stride, sources, used clusters, label quality against phones when the
manifests carry `phone_alignment`), `centroids.npy`, and `<split>.npz` per split holding the labels of every
cut concatenated (uint16) with their cut ids, recording ids, start times and offsets. `ClusterLabels(dir)`
reads them back and finds the labels of a cut, or of a window cut out of one, during pre-training.

At scale the two steps run apart (`speechrep.parts`):

    speechrep kmeans --fit-only --features mfcc --data CORPUS --k 100 --fit-fraction 0.1 --out LABELS
    speechrep kmeans --apply --data CORPUS --out LABELS --shard i/n    # or under torchrun, one part per rank

`fit_only` writes `centroids.npy` and a `kmeans.json` without splits. `apply_kmeans` labels every cut with the
nearest centroid; its batches (`max_duration` seconds, in manifest order) are planned alike by every part and
dealt to the parts by seconds, so each cut's features are computed as in a one-process `--apply` and the
labels are the same. Part i writes `LABELS/parts/<i>-of-<n>/<split>.npz` (a split at a time: a kill loses at
most one split of one part) and its `done.json`; the last part to finish (or `merge_kmeans_parts`) writes the
`<split>.npz` files and the statistics of `kmeans.json` as one process does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from sklearn.cluster import MiniBatchKMeans
from torch import Tensor
from tqdm import tqdm

from speechrep.audio.features import FeatureExtractor
from speechrep.data.batching import audio_batches, cut_sampler, load_cuts
from speechrep.data.shar import has_split, is_shar_dir
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.parts import (
    Part,
    balance,
    digest,
    exclusive_or_none,
    missing_parts,
    part_folder,
    part_folders,
    read_done,
    write_done,
)
from speechrep.pretrain.label_quality import label_quality
from speechrep.ranks import rank_and_world
from speechrep.storage import (
    SETTINGS_NAME,
    OutputLock,
    atomic_write,
    atomic_write_json,
    check_settings,
    clear_folder,
)
from speechrep.upstream.extract import load_upstream_flag, resolve_device_flag

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # hand-crafted features: 10 ms frames
HANDCRAFTED = ("mfcc", "fbank")
IGNORE = -100  # target value of frames without a label (cross-entropy's default ignore_index)
META = "kmeans.json"
MIN_SECONDS = 0.1  # shorter cuts have no frame to label


@dataclass
class FrameFeatures:
    """A frame-level feature function `(wavs, wav_lens) -> (feats (B, T, D), lengths)` and its stride."""

    describe: str
    stride: int
    extract: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    device: torch.device


def stack_frames(feats: Tensor, lengths: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Concatenate every `factor` consecutive frames; a last partial group is zero-filled (ceil(T/factor))."""
    from speechrep.nn.frames import stack_frames as stack  # the one implementation; targets keep the tail

    return stack(feats, lengths, factor, tail="pad")


def parse_features(spec: str) -> tuple[str, int | None]:
    """`mfcc` | `fbank` | `UPSTREAM[:LAYER]` → (source, layer or None)."""
    source, _, layer = spec.rpartition(":")
    if source and layer.lstrip("-").isdigit():
        return source, int(layer)
    return spec, None


def frame_features(spec: str, stride: int | None = None, device: str = "auto") -> FrameFeatures:
    """The feature function named by `spec` (see the module docstring), on `device`."""
    dev = resolve_device_flag(device)
    source, layer = parse_features(spec)
    if source in HANDCRAFTED:
        if layer is not None:
            raise ConfigError(f"--features {spec}: a layer index goes with an upstream, not with {source}")
        stride = 2 * HOP if stride is None else stride
        if stride % HOP or stride <= 0:
            raise ConfigError(
                f"--stride {stride}: hand-crafted features stack 10 ms frames, so use a multiple of {HOP}"
            )
        extractor = (
            FeatureExtractor("mfcc", delta_order=2, apply_cmvn=True, num_ceps=13)
            if source == "mfcc"
            else FeatureExtractor("fbank", apply_cmvn=True, num_mel_bins=40)
        ).to(dev)

        def handcrafted(wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
            return stack_frames(*extractor(wavs, wav_lens), stride // HOP)

        return FrameFeatures(f"{source} (stacked x{stride // HOP})", stride, handcrafted, dev)
    upstream = load_upstream_flag(source, flag="--features").to(dev).eval()
    count = len(upstream.hidden_sizes)
    index = count - 1 if layer is None else layer
    if not -count <= index < count:
        raise ConfigError(
            f"--features {spec}: layer {layer} out of range; {source} has hidden states 0..{count - 1}"
        )
    if stride is not None and stride != upstream.stride:
        raise ConfigError(f"--stride {stride}: {source} produces frames every {upstream.stride} samples")

    def hidden(wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        out = upstream(wavs, wav_lens)
        return out.hidden_states[index], out.lengths

    return FrameFeatures(f"{source} layer {index % count}", int(upstream.stride), hidden, dev)


def features_per_cut(
    cuts: CutSet, features: FrameFeatures, max_duration: float, desc: str = "features"
) -> Iterable[tuple[Any, np.ndarray]]:
    """(cut, (frames, dim) float32 features) for every cut, batched by `max_duration` seconds."""
    batches = audio_batches(cuts, max_duration, shuffle=False)(0)
    bar = tqdm(total=len(cuts), desc=desc, unit="cut", disable=not sys.stderr.isatty())
    with torch.inference_mode():
        for batch in batches:
            feats, lengths = features.extract(
                batch.wavs.to(features.device), batch.wav_lens.to(features.device)
            )
            feats = feats.float().cpu().numpy()
            for cut, frames, n in zip(batch.cuts, feats, lengths.tolist()):
                yield cut, frames[:n]
            bar.update(len(batch))
    bar.close()


def fit_kmeans(
    frames: np.ndarray, k: int, seed: int = 0, n_init: int = 20, batch_size: int = 10_000
) -> MiniBatchKMeans:
    """MiniBatchKMeans with HuBERT's settings on `frames` (N, D)."""
    if k < 2:
        raise ConfigError(f"--k {k}: a dictionary needs at least 2 clusters")
    if len(frames) < k:
        raise SpeechrepError(f"only {len(frames)} frames to fit {k} clusters; use more data or a smaller --k")
    model = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        max_iter=100,
        batch_size=batch_size,
        tol=0.0,
        max_no_improvement=100,
        n_init=n_init,
        reassignment_ratio=0.0,
        random_state=seed,
        compute_labels=False,
    )
    return model.fit(frames)


def _splits(data: Path) -> dict[str, CutSet]:
    """A corpus or Shar directory's unlabeled train and dev (when present) splits, or one manifest (`all`)."""
    if data.is_dir():
        splits = {"train": load_cuts(data, "unlabeled", "train")}
        has_dev = has_split(data, "unlabeled", "dev") if is_shar_dir(data) else \
            (data / "unlabeled" / "dev.jsonl.gz").is_file()
        if has_dev:
            splits["dev"] = load_cuts(data, "unlabeled", "dev")
        return splits
    return {"all": load_cuts(data)}


def _usable(cuts: CutSet, split: str) -> CutSet:
    """Drop (and report) cuts too short to give a frame."""
    kept = cuts.filter(lambda c: c.duration >= MIN_SECONDS).to_eager()
    if len(kept) < len(cuts):
        log.warning("%s: skipped %d cut(s) shorter than %.1f s", split, len(cuts) - len(kept), MIN_SECONDS)
    return kept


def run_kmeans(
    features: str,
    data: str | Path,
    k: int,
    out: str | Path,
    stride: int | None = None,
    fit_fraction: float = 1.0,
    max_fit_frames: int = 1_000_000,
    seed: int = 0,
    max_duration: float = 120.0,
    device: str = "auto",
    fit_only: bool = False,
) -> dict[str, Any]:
    """Fit one k-means dictionary on a sample of train frames, label all train/dev cuts; return the report.

    `fit_only`: write the dictionary only (centroids.npy, kmeans.json without splits) for `apply_kmeans`."""
    if rank_and_world()[1] > 1:
        raise ConfigError("k-means fits in one process; under torchrun run `speechrep kmeans --apply` (after "
                          "`--fit-only` in one process)")
    data, out = Path(data), Path(out)
    if not 0 < fit_fraction <= 1:
        raise ConfigError(f"--fit-fraction {fit_fraction}: must be in (0, 1]")
    if k > np.iinfo(np.uint16).max:
        raise ConfigError(f"--k {k}: at most {np.iinfo(np.uint16).max} clusters")
    splits = {name: _usable(cuts, name) for name, cuts in _splits(data).items()}
    fit_split = "train" if "train" in splits else "all"
    if len(splits[fit_split]) == 0:
        raise SpeechrepError(f"{data}: no utterance to fit k-means on")
    feats = frame_features(features, stride, device)
    rng = np.random.default_rng(seed)

    # fit on the frames of a share of the train cuts; keep their features to label them without recomputing
    ids = sorted(splits[fit_split].ids)
    chosen = set(rng.choice(ids, size=max(1, round(fit_fraction * len(ids))), replace=False).tolist())
    cached = {
        cut.id: f
        for cut, f in features_per_cut(
            splits[fit_split].filter(lambda c: c.id in chosen).to_eager(),
            feats,
            max_duration,
            "k-means sample",
        )
    }
    sample = np.concatenate(list(cached.values()))
    if len(sample) > max_fit_frames:
        sample = sample[rng.choice(len(sample), size=max_fit_frames, replace=False)]
    log.info("k-means: fitting k=%d on %d frames of %s", k, len(sample), feats.describe)
    model = fit_kmeans(sample, k, seed)
    centroids = model.cluster_centers_.astype(np.float32)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "centroids.npy", lambda tmp: np.save(tmp, centroids))
    report: dict[str, Any] = {
        "k": k,
        "stride": feats.stride,
        "sample_rate": SAMPLE_RATE,
        "features": features,
        "describe": feats.describe,
        "data": str(data),
        "fit_frames": len(sample),
        "fit_cuts": len(chosen),
        "inertia_per_frame": float(model.inertia_) / len(sample),
        "splits": {},
    }
    if fit_only:
        atomic_write_json(out / META, report)
        return report
    labels: dict[str, dict[str, np.ndarray]] = {}
    for name, cuts in splits.items():
        labels[name] = {}
        for cut, f in features_per_cut(
            cuts.filter(lambda c: c.id not in cached).to_eager(), feats, max_duration, f"labelling {name}"
        ):
            labels[name][cut.id] = assign_labels(f, centroids)
        for cut_id in cached.keys() & set(cuts.ids):
            labels[name][cut_id] = assign_labels(cached[cut_id], centroids)
    return _finish(out, report, splits, labels)


def assign_labels(frames: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (squared Euclidean distance) of every frame (N, D), as uint16."""
    distances = (centroids * centroids).sum(1)[None, :] - 2.0 * (frames @ centroids.T)
    return distances.argmin(1).astype(np.uint16)


def _finish(out: Path, report: dict[str, Any], splits: dict[str, CutSet],
            labels: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write every split's labels and their statistics into `report` and `kmeans.json`; return the report."""
    k, stride = int(report["k"]), int(report["stride"])
    report = dict(report, splits={})
    for name, cuts in splits.items():
        _write_split(out / f"{name}.npz", cuts, labels[name])
        frames = np.concatenate([np.zeros(0, np.uint16), *labels[name].values()])
        counts = np.bincount(frames.astype(np.int64), minlength=k)
        stats: dict[str, Any] = {
            "cuts": len(labels[name]),
            "frames": int(counts.sum()),
            "used_clusters": int((counts > 0).sum()),
        }
        quality = label_quality(cuts, labels[name], stride / SAMPLE_RATE, k)
        if quality is not None:
            stats["label_quality"] = quality.as_dict()
        report["splits"][name] = stats
    fit_split = "train" if "train" in splits else "all"
    used = report["splits"][fit_split]["used_clusters"]
    report["used_clusters"] = used
    if used < 2:
        raise SpeechrepError(
            f"k-means on {report['describe']}: every frame falls in one cluster (degenerate features)"
        )
    if used < k:
        log.warning("k-means: only %d of %d clusters label any %s frame", used, k, fit_split)
    atomic_write_json(out / META, report)
    return report


def _fitted(out: Path) -> tuple[dict[str, Any], np.ndarray]:
    """The report and centroids a fit wrote into `out`, or one ConfigError line."""
    if not (out / META).is_file() or not (out / "centroids.npy").is_file():
        raise ConfigError(f"--out {out}: no fitted k-means here (run `speechrep kmeans --fit-only` first)")
    return json.loads((out / META).read_text()), np.load(out / "centroids.npy")


def _label_units(units: list[tuple[str, CutSet]], features: FrameFeatures, centroids: np.ndarray,
                 desc: str) -> dict[str, dict[str, np.ndarray]]:
    """Split → cut id → labels of the cuts of `units` (split, batch), each batch run as it comes."""
    labels: dict[str, dict[str, np.ndarray]] = {}
    total = sum(len(batch) for _, batch in units)
    bar = tqdm(total=total, desc=desc, unit="cut", disable=not sys.stderr.isatty())
    with torch.inference_mode():
        for split, batch in units:
            batch = batch.sort_by_duration(ascending=False)  # as audio_batches collates
            wavs, lens = collate_audio(batch)
            device = features.device
            feats, lengths = features.extract(wavs.float().to(device), lens.long().to(device))
            feats = feats.float().cpu().numpy()
            for cut, frames, n in zip(batch, feats, lengths.tolist()):
                labels.setdefault(split, {})[cut.id] = assign_labels(frames[:n], centroids)
            bar.update(len(batch))
    bar.close()
    return labels


def write_unit_boundaries(
    labels: str | Path, manifests: Iterable[str | Path], path: str | Path, max_duration: float = 120.0,
    device: str = "auto",
) -> int:
    """Segment boundaries from a dictionary's units (sequence compression): every cut of `manifests` is
    labelled with the dictionary fitted in `labels` (its features, e.g. a teacher's layer), and the starts of
    the runs of repeated units are written to `path` as a boundaries file (`speechrep.data.boundaries`); the
    number of cuts written. The file is written whole, atomically."""
    report, centroids = _fitted(Path(labels))
    features = frame_features(str(report["features"]), int(report["stride"]), device)
    seconds_per_frame = features.stride / SAMPLE_RATE
    lines = []
    for manifest in manifests:
        cuts = _usable(load_cuts(manifest), str(manifest))
        described = f"units {Path(manifest).name}"
        for cut, frames in features_per_cut(cuts, features, max_duration, desc=described):
            units = assign_labels(frames, centroids)
            starts = np.flatnonzero(units[1:] != units[:-1]) + 1
            times = [round(float(t) * seconds_per_frame, 4) for t in starts]
            lines.append(json.dumps({"id": cut.id, "boundaries": times}))
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return len(lines)


def apply_kmeans(
    out: str | Path,
    data: str | Path,
    part: Part | None = None,
    max_duration: float = 120.0,
    device: str = "auto",
) -> dict[str, Any]:
    """Label every usable cut of `data` with the dictionary fitted in `out` (module doc); the report.

    With `part`, label that part only into `out/parts/`; the last part to finish merges (its report then has
    the splits, else `{"part": ..., "merged": False}`)."""
    out, data = Path(out), Path(data)
    report, centroids = _fitted(out)
    splits = {name: _usable(cuts, name) for name, cuts in _splits(data).items()}
    units = [(name, batch) for name, cuts in splits.items()
             for batch in cut_sampler(cuts, max_duration, shuffle=False, rank=0, world=1)]
    features = frame_features(report["features"], int(report["stride"]), device)
    if part is None:
        with OutputLock(out, "speechrep kmeans --apply"):
            labels = _label_units(units, features, centroids, "labelling")
            return _finish(out, report, splits, {name: labels.get(name, {}) for name in splits})
    fingerprint = hashlib.sha256(centroids.tobytes()).hexdigest()[:16]
    plan = digest(part.count, max_duration, fingerprint, [(name, list(batch.ids)) for name, batch in units])
    costs = [sum(cut.duration for cut in batch) for _, batch in units]
    mine = [units[i] for i in balance(costs, part.count)[part.index]]
    folder = part_folder(out, part)
    with OutputLock(out, f"speechrep kmeans --apply part {part}", shared=True, every_rank=True), \
            OutputLock(folder, f"speechrep kmeans --apply part {part}", every_rank=True):
        settings = {"plan": plan, "part": str(part)}
        try:
            recorded = json.loads((folder / SETTINGS_NAME).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            recorded = None
        if recorded != settings:  # labels of another dictionary, corpus or plan: of no use to this one
            clear_folder(folder)
        check_settings(folder, settings, every_rank=True)
        for name in splits:
            path = folder / f"{name}.npz"
            if path.is_file():
                continue  # done before a kill
            labels = _label_units([unit for unit in mine if unit[0] == name], features, centroids,
                                  f"labelling {name} {part}").get(name, {})
            atomic_write(path, lambda tmp, cuts=splits[name], labels=labels: _write_split(tmp, cuts, labels))
        write_done(folder, plan, {"part": str(part), "centroids": fingerprint,
                                  "cuts": sum(len(batch) for _, batch in mine)})
    with exclusive_or_none(out, f"speechrep kmeans --apply part {part} (merging)") as alone:
        if alone and not missing_parts(out, part.count, plan):
            return _merge(out, report, splits, fingerprint)
    return {"part": str(part), "merged": False}


def merge_kmeans_parts(out: str | Path, data: str | Path) -> dict[str, Any]:
    """Write the labels of `data` from the finished parts of an `apply_kmeans` in `out` (taking it alone)."""
    out = Path(out)
    report, centroids = _fitted(out)
    splits = {name: _usable(cuts, name) for name, cuts in _splits(Path(data)).items()}
    with OutputLock(out, "speechrep kmeans --merge"):
        return _merge(out, report, splits, hashlib.sha256(centroids.tobytes()).hexdigest()[:16])


def _merge(out: Path, report: dict[str, Any], splits: dict[str, CutSet], fingerprint: str) -> dict[str, Any]:
    """Gather the part labels of this dictionary and write them as one process would (`_finish`)."""
    labels: dict[str, dict[str, np.ndarray]] = {name: {} for name in splits}
    for folder in part_folders(out):
        done = read_done(folder)
        if done is None or done.get("centroids") != fingerprint:
            continue
        for name in splits:
            with np.load(folder / f"{name}.npz") as z:
                offsets, values = z["offsets"], z["labels"]
                for i, cut_id in enumerate(z["ids"].tolist()):
                    labels[name][cut_id] = values[offsets[i]:offsets[i + 1]]
    lacking = {name: len(set(cuts.ids) - labels[name].keys()) for name, cuts in splits.items()}
    if any(lacking.values()):
        raise SpeechrepError(f"{out}: finished parts lack the labels of {lacking} cut(s); run the missing "
                             f"`--apply --shard` parts (folders under {out / 'parts'})")
    return _finish(out, report, splits, labels)


def _write_split(path: Path, cuts: CutSet, labels: dict[str, np.ndarray]) -> None:
    """One split's labels: concatenated uint16 frames plus ids, recordings, starts and offsets."""
    kept = [c for c in cuts if c.id in labels]
    lengths = np.array([len(labels[c.id]) for c in kept], dtype=np.int64)
    np.savez_compressed(
        path,
        ids=np.array([c.id for c in kept]),
        recording_ids=np.array([c.recording_id for c in kept]),
        starts=np.array([c.start for c in kept], dtype=np.float64),
        durations=np.array([c.duration for c in kept], dtype=np.float64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        labels=np.concatenate([labels[c.id] for c in kept]) if kept else np.zeros(0, np.uint16),
    )


class ClusterLabels:
    """The labels written by `run_kmeans`, looked up by cut (or by a window cut out of a labelled cut)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        meta_path = directory / META
        if not meta_path.is_file():
            raise ConfigError(f"labels={directory}: no {META} here (write one with `speechrep kmeans`)")
        self.directory = directory
        self.meta = json.loads(meta_path.read_text())
        self.k, self.stride = int(self.meta["k"]), int(self.meta["stride"])
        self._frames: dict[str, np.ndarray] = {}
        self._spans: dict[str, list[tuple[float, float, str]]] = {}  # recording → (start, end, cut id)
        for split in self.meta["splits"]:
            with np.load(directory / f"{split}.npz") as z:
                labels, offsets = z["labels"], z["offsets"]
                for i, (cut_id, rec, start, dur) in enumerate(
                    zip(
                        z["ids"].tolist(),
                        z["recording_ids"].tolist(),
                        z["starts"].tolist(),
                        z["durations"].tolist(),
                    )
                ):
                    self._frames[cut_id] = labels[offsets[i] : offsets[i + 1]]
                    self._spans.setdefault(rec, []).append((start, start + dur, cut_id))
        if not self._frames:
            raise ConfigError(f"labels={directory}: no labelled cut")

    def check_stride(self, model_stride: int, model: str) -> None:
        """Error unless the label rate equals the model's frame rate."""
        if model_stride != self.stride:
            raise ConfigError(
                f"labels={self.directory}: labels every {self.stride} samples but {model} makes a "
                f"frame every {model_stride}; run `speechrep kmeans` with --stride {model_stride}"
            )

    def for_cut(self, cut: Any) -> np.ndarray:
        """The frame labels covering `cut`: its own, or the slice of the labelled cut it was windowed from."""
        if cut.id in self._frames:
            return self._frames[cut.id]
        for start, end, source in self._spans.get(cut.recording_id, ()):
            if start - 1e-3 <= cut.start and cut.start + cut.duration <= end + 1e-3:
                offset = round((cut.start - start) * SAMPLE_RATE / self.stride)
                return self._frames[source][offset:]
        raise SpeechrepError(
            f"labels={self.directory}: no labels for cut {cut.id!r} (recording "
            f"{cut.recording_id!r}); label this data with `speechrep kmeans` first"
        )

    def targets(self, cuts: Iterable[Any], lengths: Tensor, max_frames: int, tolerance: int = 2) -> Tensor:
        """(B, max_frames) long targets aligned to the model's frames; padding, unlabelled edges: IGNORE."""
        rows = np.full((len(lengths), max_frames), IGNORE, dtype=np.int64)
        for row, cut, n in zip(rows, cuts, lengths.tolist()):
            frames = self.for_cut(cut)
            if len(frames) + tolerance < n or (cut.id in self._frames and len(frames) > n + tolerance):
                raise SpeechrepError(
                    f"labels={self.directory}: cut {cut.id!r} has {len(frames)} label frames but the "
                    f"model gives {n}: the label rate does not match the model's frame rate"
                )
            m = min(n, len(frames))
            row[:m] = frames[:m]
        return torch.from_numpy(rows).to(lengths.device)

"""The HEAR evaluation protocol (https://hearbenchmark.com), implemented natively over `speechrep.hear`.

    results = evaluate_tasks("fbank_raw", Path("hear_tasks"), Path("out/hear"))  # a task or a folder of them

A task folder is in the published HEAR layout: `task_metadata.json` (task_name, embedding_type scene/event,
prediction_type multiclass/multilabel, split_mode trainvaltest / new_split_kfold / presplit_kfold with nfolds,
sample_duration in seconds, evaluation: metric names, the first is the one models are chosen by),
`labelvocabulary.csv` (idx,label), one label file per split (`train.json` or `fold00.json`: {filename:
[label, ...]} for scene tasks, {filename: [{"label", "start", "end"}, ...]} in milliseconds for event tasks)
and the audio per split at a sample rate (`16000/fold00/*.wav`). Each split is embedded once with the HEAR API
and cached under OUT/<task>/embeddings/ (a split whose cache names this upstream is not embedded again). For
each data split (k-fold: fold i is test, fold i+1 valid, the rest train, as heareval does) every point of a
small grid of MLP predictors is trained on train with early stopping on the validation score of the task's
first metric; the point with the best validation score is scored on test. Event tasks predict every timestamp
embedding (multilabel, sigmoid), and frame predictions become events by a median filter, a 0.5 threshold and a
minimum duration, both chosen on validation. The metrics follow sed_eval's definitions (see each function).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import median_filter
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from torch import Tensor, nn

from speechrep.audio.io import load_audio
from speechrep.errors import ConfigError
from speechrep.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings, load_model
from speechrep.storage import atomic_write_text
from speechrep.upstream.feature_store import upstream_fingerprint

log = logging.getLogger(__name__)

Events = dict[str, list[dict]]  # filename → [{"label", "start", "end"} in ms]

# The grid heareval settled on for HEAR 2021 (BatchNorm after each hidden linear layer, no embedding norm).
HEAR_GRID: dict[str, list] = {
    "hidden_layers": [1, 2], "hidden_dim": [1024], "dropout": [0.1], "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "init": ["xavier_uniform", "xavier_normal"],
}
EVENT_POSTPROCESSING_GRID: dict[str, list[float]] = {"median_filter_ms": [250.0],
                                                     "min_duration_ms": [125.0, 250.0]}
LOWER_IS_BETTER = {"segment_1s_er"}


@dataclass(frozen=True)
class HearTask:
    """One task folder in the HEAR layout, read but not loaded (audio stays on disk)."""

    path: Path
    name: str
    embedding_type: str  # scene | event
    prediction_type: str  # multiclass | multilabel
    sample_duration: float  # seconds; every clip is padded or trimmed to it
    evaluation: list[str]
    splits: list[str]  # label files present: train/valid/test or fold00..
    data_splits: list[dict[str, list[str]]]  # per round: {"train": [...], "valid": [...], "test": [...]}
    labels: list[str]  # index = class id

    def label_file(self, split: str) -> dict:
        """{filename: labels or events} of one split."""
        return json.loads((self.path / f"{split}.json").read_text())


@dataclass(frozen=True)
class PredictorConfig:
    """One grid point of the HEAR MLP predictor and its training schedule."""

    hidden_layers: int = 1
    hidden_dim: int = 1024
    dropout: float = 0.1
    lr: float = 1e-3
    init: str = "xavier_uniform"
    max_epochs: int = 500
    patience: int = 20  # validation checks without improvement before stopping
    check_every: int = 3  # epochs between validation checks
    batch_size: int = 1024


def _data_splits(meta: dict, splits: list[str], where: Path) -> list[dict[str, list[str]]]:
    """heareval's rounds: one train/valid/test round, or k where fold i tests and fold i+1 validates."""
    mode = meta.get("split_mode") or meta.get("mode") or ""
    if mode in ("trainvaltest", "train/valid/test") or not mode and "train" in splits:
        missing = {"train", "valid", "test"} - set(splits)
        if missing:
            raise ConfigError(f"hear-eval: {where}: split_mode {mode!r} but no {sorted(missing)} label files")
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    if "fold" in mode or mode.endswith("fold"):
        n = int(meta.get("nfolds") or "".join(c for c in mode if c.isdigit()) or len(splits))
        folds = [f"fold{i:02d}" for i in range(n)]
        if n < 3 or any(f not in splits for f in folds):
            raise ConfigError(f"hear-eval: {where}: {n} folds expected (fold00..), found splits {splits}")
        return [{"train": [f for f in folds if f not in (folds[i], folds[(i + 1) % n])],
                 "valid": [folds[(i + 1) % n]], "test": [folds[i]]} for i in range(n)]
    raise ConfigError(f"hear-eval: {where}: unknown split_mode {mode!r} (trainvaltest, new_split_kfold, "
                      "presplit_kfold)")


def read_task(path: str | Path) -> HearTask:
    """Read a task folder's metadata, label vocabulary and split names; clear errors for a malformed one."""
    path = Path(path)
    meta_file = path / "task_metadata.json"
    if not meta_file.is_file():
        raise ConfigError(f"hear-eval: {path}: no task_metadata.json (not a HEAR task folder)")
    meta = json.loads(meta_file.read_text())
    for key in ("embedding_type", "prediction_type", "evaluation"):
        if key not in meta:
            raise ConfigError(f"hear-eval: {meta_file}: missing {key!r}")
    if meta["embedding_type"] not in ("scene", "event"):
        raise ConfigError(
            f"hear-eval: {meta_file}: embedding_type {meta['embedding_type']!r}: not scene/event")
    if meta["prediction_type"] not in ("multiclass", "multilabel"):
        raise ConfigError(f"hear-eval: {meta_file}: prediction_type {meta['prediction_type']!r}")
    with open(path / "labelvocabulary.csv", newline="") as f:
        rows = sorted((int(r["idx"]), str(r["label"])) for r in csv.DictReader(f))
    if [i for i, _ in rows] != list(range(len(rows))):
        raise ConfigError(f"hear-eval: {path}/labelvocabulary.csv: idx must be 0..{len(rows) - 1}")
    splits = sorted(p.stem for p in path.glob("*.json") if p.name != "task_metadata.json")
    return HearTask(path=path, name=str(meta.get("task_name", path.name)),
                    embedding_type=meta["embedding_type"],
                    prediction_type=meta["prediction_type"], sample_duration=float(meta["sample_duration"]),
                    evaluation=list(meta["evaluation"]), splits=splits,
                    data_splits=_data_splits(meta, splits, path), labels=[label for _, label in rows])


def find_tasks(root: str | Path) -> list[Path]:
    """`root` itself when it is a task folder, else its task sub-folders (sorted)."""
    root = Path(root)
    if (root / "task_metadata.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/task_metadata.json"))
    if not found:
        raise ConfigError(f"hear-eval: {root}: neither a HEAR task folder nor a folder of them")
    return found


# ---------------------------------------------------------------- embeddings (cached per split)

@dataclass
class SplitEmbeddings:
    """A split's embeddings: scene (N, D) or event (N, T, D) with frame timestamps (T,) in ms."""

    files: list[str]
    embeddings: np.ndarray
    timestamps: np.ndarray | None = None


def _audio_dir(task: HearTask, split: str, sample_rate: int) -> Path:
    """The split's audio at the model's rate if the task has it, else at any rate (resampled on load)."""
    preferred = task.path / str(sample_rate) / split
    if preferred.is_dir():
        return preferred
    others = sorted(p / split for p in task.path.iterdir() if p.name.isdigit() and (p / split).is_dir())
    if not others:
        raise ConfigError(f"hear-eval: {task.path}: no audio folder <sample_rate>/{split}/")
    return others[0]


def embed_split(task: HearTask, split: str, model: HearModel, cache: Path, tag: str,
                batch: int = 16) -> SplitEmbeddings:
    """Embed one split with the HEAR API, or read it back from `cache` when an earlier run stored it."""
    meta_file, array_file = cache / f"{split}.json", cache / f"{split}.npy"
    if meta_file.is_file() and array_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("upstream") == tag and meta.get("files") == sorted(task.label_file(split)):
            ts = np.asarray(meta["timestamps"], dtype=np.float32) if meta["timestamps"] is not None else None
            return SplitEmbeddings(meta["files"], np.load(array_file), ts)
    files = sorted(task.label_file(split))
    folder = _audio_dir(task, split, model.sample_rate)
    n_samples = int(round(task.sample_duration * model.sample_rate))
    chunks, timestamps = [], None
    for start in range(0, len(files), batch):
        wavs = []
        for name in files[start:start + batch]:
            wav, _ = load_audio(folder / name, model.sample_rate)
            wavs.append(torch.nn.functional.pad(wav[:n_samples], (0, max(0, n_samples - len(wav)))))
        audio = torch.stack(wavs)
        if task.embedding_type == "scene":
            chunks.append(get_scene_embeddings(audio, model).float().cpu().numpy())
        else:
            emb, ts = get_timestamp_embeddings(audio, model)
            chunks.append(emb.float().cpu().numpy())
            timestamps = ts[0].cpu().numpy()
    array = np.concatenate(chunks).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{split}.npy.tmp"
    with open(tmp, "wb") as f:  # a file object, so np.save keeps the name (it appends .npy to strings)
        np.save(f, array)
    os.replace(tmp, array_file)
    tmp_meta = cache / f".{split}.json.tmp"
    tmp_meta.write_text(json.dumps({"upstream": tag, "files": files, "shape": list(array.shape),
                                    "timestamps": None if timestamps is None else timestamps.tolist()}))
    os.replace(tmp_meta, meta_file)
    return SplitEmbeddings(files, array, timestamps)


# ---------------------------------------------------------------- metrics

def top1_accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of clips whose highest-scoring class is a target class; scores, targets (N, C)."""
    return float(targets[np.arange(len(scores)), scores.argmax(1)].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of each class (sklearn), averaged over the classes that have a positive."""
    from sklearn.metrics import average_precision_score

    present = targets.sum(0) > 0
    return float(np.mean(average_precision_score(targets[:, present], scores[:, present], average=None)))


def event_fmeasure(estimated: Events, reference: Events, collar_ms: float = 200.0, offsets: bool = False,
                   offset_fraction: float = 0.5) -> float:
    """sed_eval's event-based F-measure: an estimated event is a hit when a reference event of the same file
    and label starts within ±collar and, with `offsets`, also ends within ±max(collar, offset_fraction × the
    reference event's length) (sed_eval's `percentage_of_length`); events pair one to one (maximum
    matching); F = 2·TP / (Nref + Nsys), micro-averaged over all files and classes; 0 when nothing is
    estimated (heareval turns sed_eval's NaN into 0)."""
    hits = n_ref = n_sys = 0
    for name in set(reference) | set(estimated):
        ref, est = reference.get(name, []), estimated.get(name, [])
        n_ref, n_sys = n_ref + len(ref), n_sys + len(est)
        for label in {e["label"] for e in ref} & {e["label"] for e in est}:
            r = np.array([(e["start"], e["end"]) for e in ref if e["label"] == label], dtype=np.float64)
            s = np.array([(e["start"], e["end"]) for e in est if e["label"] == label], dtype=np.float64)
            close = np.abs(r[:, None, 0] - s[None, :, 0]) <= collar_ms + 1e-9
            if offsets:
                offset_collar = np.maximum(collar_ms, offset_fraction * (r[:, 1] - r[:, 0]))
                close &= np.abs(r[:, None, 1] - s[None, :, 1]) <= offset_collar[:, None] + 1e-9
            hits += int((maximum_bipartite_matching(csr_matrix(close), perm_type="column") >= 0).sum())
    return 2.0 * hits / (n_ref + n_sys) if hits else 0.0


def _activity(events: list[dict], labels: list[str], n_segments: int, segment_ms: float) -> np.ndarray:
    """(n_segments, C) whether each label is active in each segment (sed_eval: floor(onset), ceil(offset))."""
    roll = np.zeros((n_segments, len(labels)), dtype=bool)
    index = {label: i for i, label in enumerate(labels)}
    for e in events:
        first, last = int(math.floor(e["start"] / segment_ms)), int(math.ceil(e["end"] / segment_ms))
        roll[first:last, index[e["label"]]] = True
    return roll


def segment_error_rate(estimated: Events, reference: Events, segment_ms: float = 1000.0) -> float:
    """sed_eval's segment-based error rate: per segment of `segment_ms` (up to the last offset of the file's
    reference or estimated events), FN and FP count labels active only in the reference or only in the
    estimate; S = min(FN, FP), D = max(0, FN − FP), I = max(0, FP − FN); ER = Σ(S + D + I) / Σ Nref."""
    labels = sorted({e["label"] for events in (*reference.values(), *estimated.values()) for e in events})
    errors = n_ref = 0
    for name in set(reference) | set(estimated):
        ref, est = reference.get(name, []), estimated.get(name, [])
        last = max([e["end"] for e in ref + est], default=0.0)
        n = int(math.ceil(last / segment_ms))
        r, s = _activity(ref, labels, n, segment_ms), _activity(est, labels, n, segment_ms)
        fn, fp = (r & ~s).sum(1), (~r & s).sum(1)
        errors += int(np.minimum(fn, fp).sum() + np.maximum(0, fn - fp).sum() + np.maximum(0, fp - fn).sum())
        n_ref += int(r.sum())
    return errors / n_ref if n_ref else float("nan")


def _class_aucs(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC AUC of each class that has both positive and negative clips (sklearn)."""
    from sklearn.metrics import roc_auc_score

    positives = targets.sum(0)
    both = (positives > 0) & (positives < len(targets))
    if not both.any():
        return np.zeros(0)
    return np.atleast_1d(roc_auc_score(targets[:, both], scores[:, both], average=None))


def auc_roc(scores: np.ndarray, targets: np.ndarray) -> float:
    """HEAR's `aucroc`: the ROC AUC of each class, averaged over the classes with positives and negatives."""
    aucs = _class_aucs(scores, targets)
    return float(aucs.mean()) if len(aucs) else float("nan")


def d_prime(scores: np.ndarray, targets: np.ndarray) -> float:
    """HEAR's `d_prime`: √2 · Φ⁻¹(AUC) of each class, averaged (a perfectly separated class gives +inf, as
    in heareval)."""
    from scipy.stats import norm

    aucs = _class_aucs(scores, targets)
    return float(np.mean(np.sqrt(2.0) * norm.ppf(aucs))) if len(aucs) else float("nan")


SCENE_METRICS = {"top1_acc": top1_accuracy, "mAP": mean_average_precision, "aucroc": auc_roc,
                 "d_prime": d_prime}
EVENT_METRICS = {
    "event_onset_200ms_fms": lambda est, ref: event_fmeasure(est, ref, 200.0),
    "event_onset_50ms_fms": lambda est, ref: event_fmeasure(est, ref, 50.0),
    "event_onset_offset_50ms_20perc_fms": lambda est, ref: event_fmeasure(est, ref, 50.0, offsets=True,
                                                                          offset_fraction=0.2),
    "segment_1s_er": lambda est, ref: segment_error_rate(est, ref, 1000.0),
}


def _better(metric: str, a: float, b: float) -> bool:
    """Whether score a beats score b for this metric (NaN never beats)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


# ---------------------------------------------------------------- events from frame predictions

def frames_to_events(probs: np.ndarray, timestamps: np.ndarray, labels: list[str], median_filter_ms: float,
                     min_duration_ms: float, threshold: float = 0.5) -> list[dict]:
    """One clip's (T, C) frame probabilities → events: median filter over time, threshold, runs of adjacent
    active frames from the first to the last frame's timestamp, runs shorter than min_duration dropped."""
    step = float(np.mean(np.diff(timestamps))) if len(timestamps) > 1 else 1.0
    width = int(round(median_filter_ms / step))
    if width > 1:
        probs = median_filter(probs, size=(width, 1), mode="nearest")
    active = np.pad(probs > threshold, ((1, 1), (0, 0)))
    change = np.diff(active.astype(np.int8), axis=0)
    events = []
    for c in range(probs.shape[1]):
        starts, ends = np.flatnonzero(change[:, c] == 1), np.flatnonzero(change[:, c] == -1) - 1
        for a, b in zip(starts, ends):
            if timestamps[b] - timestamps[a] >= min_duration_ms:
                events.append({"label": labels[c], "start": float(timestamps[a]),
                               "end": float(timestamps[b])})
    return sorted(events, key=lambda e: e["start"])


def frame_targets(events: list[dict], timestamps: np.ndarray, labels: list[str]) -> np.ndarray:
    """(T, C) multilabel frame targets: a label is on at timestamp t when start ≤ t < end (heareval)."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(timestamps), len(labels)), dtype=np.float32)
    for e in events:
        y[(timestamps >= e["start"]) & (timestamps < e["end"]), index[e["label"]]] = 1.0
    return y


# ---------------------------------------------------------------- the predictor

def build_predictor(n_in: int, n_out: int, cfg: PredictorConfig) -> nn.Sequential:
    """HEAR's MLP: [Linear → BatchNorm → Dropout → ReLU] × hidden_layers → Linear, Xavier-initialised."""
    init = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}[cfg.init]
    layers: list[nn.Module] = []
    dim, gain = n_in, nn.init.calculate_gain("linear")
    for _ in range(cfg.hidden_layers):
        linear = nn.Linear(dim, cfg.hidden_dim)
        init(linear.weight, gain=gain)
        layers += [linear, nn.BatchNorm1d(cfg.hidden_dim), nn.Dropout(cfg.dropout), nn.ReLU()]
        dim, gain = cfg.hidden_dim, nn.init.calculate_gain("relu")
    out = nn.Linear(dim, n_out)
    init(out.weight, gain=gain)
    return nn.Sequential(*layers, out)


def _predict(model: nn.Module, x: Tensor, multilabel: bool) -> np.ndarray:
    """Class probabilities (softmax, or sigmoid for multilabel) in eval mode."""
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(x[i:i + 8192]) for i in range(0, len(x), 8192)])
    model.train()
    return (logits.sigmoid() if multilabel else logits.softmax(-1)).numpy()


@dataclass
class Fitted:
    """A trained grid point: its validation score, epoch, postprocessing and weights."""

    config: PredictorConfig
    valid_score: float
    epoch: int
    postprocessing: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


def train_predictor(x: Tensor, y: Tensor, score_valid, multilabel: bool, cfg: PredictorConfig, metric: str,
                    seed: int = 0) -> tuple[nn.Module, Fitted]:
    """Adam on (x, y) with early stopping: `score_valid(model) -> (score, postprocessing)` every check_every
    epochs; the weights of the best check are kept (never chosen on test)."""
    torch.manual_seed(seed)
    model = build_predictor(x.shape[1], y.shape[1], cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    target = y if multilabel else y.argmax(1)
    best = Fitted(cfg, float("nan"), -1)
    checks_since_best = 0
    for epoch in range(1, cfg.max_epochs + 1):
        order = torch.randperm(len(x))
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2 and cfg.hidden_layers:  # BatchNorm needs two rows
                continue
            opt.zero_grad()
            loss_fn(model(x[idx]), target[idx]).backward()
            opt.step()
        if epoch % cfg.check_every and epoch != cfg.max_epochs:
            continue
        score, post = score_valid(model)
        if _better(metric, score, best.valid_score) or best.epoch < 0:
            best = Fitted(cfg, score, epoch, post, {k: v.clone() for k, v in model.state_dict().items()})
            checks_since_best = 0
        else:
            checks_since_best += 1
            if checks_since_best >= cfg.patience:
                break
    model.load_state_dict(best.state)
    return model, best


def grid_configs(grid: dict[str, list], base: PredictorConfig, points: int | None,
                 seed: int) -> list[PredictorConfig]:
    """The grid's points (all, or `points` of them drawn with `seed`, as heareval samples its grid)."""
    keys = list(grid)
    configs = [replace(base, **dict(zip(keys, values)))
               for values in itertools.product(*(grid[k] for k in keys))]
    if points is not None and points < len(configs):
        pick = np.random.default_rng(seed).choice(len(configs), points, replace=False)
        configs = [configs[i] for i in sorted(pick)]
    return configs


# ---------------------------------------------------------------- one task

@dataclass
class HearEvalConfig:
    """How the runner trains: the predictor grid, how many of its points, the schedule and the seed."""

    grid: dict[str, list] = field(default_factory=lambda: dict(HEAR_GRID))
    grid_points: int | None = None  # None: the whole grid
    base: PredictorConfig = field(default_factory=PredictorConfig)
    postprocessing: dict[str, list[float]] = field(default_factory=lambda: dict(EVENT_POSTPROCESSING_GRID))
    seed: int = 0


def _stack(task: HearTask, embedded: dict[str, SplitEmbeddings], splits: list[str]):
    """Inputs, one-hot/multi-hot targets and, for event tasks, per-file reference events of some splits."""
    index = {label: i for i, label in enumerate(task.labels)}
    xs, ys, refs, files = [], [], {}, []
    for split in splits:
        emb, labels = embedded[split], task.label_file(split)
        for i, name in enumerate(emb.files):
            if task.embedding_type == "scene":
                y = np.zeros((1, len(task.labels)), dtype=np.float32)
                y[0, [index[str(label)] for label in labels[name]]] = 1.0
                xs.append(emb.embeddings[i:i + 1])
            else:
                y = frame_targets(labels[name], emb.timestamps, task.labels)
                refs[name] = labels[name]
                xs.append(emb.embeddings[i])
            ys.append(y)
            files.append(name)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), refs, files


def _event_predictions(probs: np.ndarray, files: list[str], timestamps: np.ndarray, labels: list[str],
                       post: dict) -> Events:
    """Frame probabilities of consecutive clips (T frames each) → events per file."""
    t = len(timestamps)
    return {name: frames_to_events(probs[i * t:(i + 1) * t], timestamps, labels, **post)
            for i, name in enumerate(files)}


def _task_metrics(task: HearTask) -> tuple[dict, list[str], list[str]]:
    """(metric table of the task's type, the task's metrics it implements, those it does not); a one-line
    ConfigError when it implements none."""
    table = SCENE_METRICS if task.embedding_type == "scene" else EVENT_METRICS
    metrics = [m for m in task.evaluation if m in table]
    if not metrics:
        raise ConfigError(f"hear-eval: {task.path}: none of the metrics {task.evaluation} is implemented for "
                          f"{task.embedding_type} tasks ({sorted(table)})")
    return table, metrics, [m for m in task.evaluation if m not in table]


def _write_result(task: HearTask, upstream: str, metrics: list[str], skipped: list[str], rounds: list[dict],
                  embed_seconds: float, start: float, out: Path) -> dict:
    """The task's result (each metric's test mean and std over rounds), written atomically to
    OUT/results.json and returned."""
    result = {
        "task": task.name, "upstream": upstream, "embedding_type": task.embedding_type,
        "prediction_type": task.prediction_type, "primary": metrics[0],
        "test": {m: float(np.mean([rd["test"][m] for rd in rounds])) for m in metrics},
        "test_std": {m: float(np.std([rd["test"][m] for rd in rounds])) for m in metrics},
        "rounds": rounds, "metrics_not_implemented": skipped,
        "embed_seconds": round(embed_seconds, 2), "seconds": round(time.perf_counter() - start, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    return result


def evaluate_task(task: HearTask, model: HearModel, out: Path, tag: str,
                  cfg: HearEvalConfig | None = None) -> dict:
    """Embed (cached), train the grid per data split, score test; writes and returns OUT/results.json."""
    cfg = cfg or HearEvalConfig()
    start = time.perf_counter()
    embedded = {s: embed_split(task, s, model, out / "embeddings", tag) for s in task.splits}
    embed_seconds = time.perf_counter() - start
    multilabel = task.prediction_type == "multilabel" or task.embedding_type == "event"
    table, metrics, skipped = _task_metrics(task)
    primary = metrics[0]
    timestamps = next(iter(embedded.values())).timestamps
    posts = [dict(zip(cfg.postprocessing, v)) for v in itertools.product(*cfg.postprocessing.values())]

    def scorer(x: Tensor, y: Tensor, refs: Events, files: list[str]):
        def score(predictor: nn.Module, post: dict | None = None) -> tuple[float, dict]:
            probs = _predict(predictor, x, multilabel)
            if task.embedding_type == "scene":
                return table[primary](probs, y.numpy()), {}
            best = (float("nan"), {})
            for p in [post] if post is not None else posts:
                s = table[primary](_event_predictions(probs, files, timestamps, task.labels, p), refs)
                if best[1] == {} or _better(primary, s, best[0]):
                    best = (s, p)
            return best
        return score

    rounds = []
    for r, split in enumerate(task.data_splits):
        x_tr, y_tr, _, _ = _stack(task, embedded, split["train"])
        x_va, y_va, refs_va, files_va = _stack(task, embedded, split["valid"])
        x_te, y_te, refs_te, files_te = _stack(task, embedded, split["test"])
        chosen: tuple[nn.Module, Fitted] | None = None
        for i, point in enumerate(grid_configs(cfg.grid, cfg.base, cfg.grid_points, cfg.seed)):
            fitted = train_predictor(x_tr, y_tr, scorer(x_va, y_va, refs_va, files_va), multilabel, point,
                                     primary, seed=cfg.seed + 1000 * r + i)
            if chosen is None or _better(primary, fitted[1].valid_score, chosen[1].valid_score):
                chosen = fitted
        predictor, best = chosen
        probs = _predict(predictor, x_te, multilabel)
        if task.embedding_type == "scene":
            test = {m: table[m](probs, y_te.numpy()) for m in metrics}
        else:
            events = _event_predictions(probs, files_te, timestamps, task.labels, best.postprocessing)
            test = {m: table[m](events, refs_te) for m in metrics}
        rounds.append({"split": split, "config": asdict(best.config), "epoch": best.epoch,
                       "valid": {primary: best.valid_score}, "postprocessing": best.postprocessing,
                       "test": test})
        log.info("hear-eval %s round %d/%d: %s", task.name, r + 1, len(task.data_splits), test)
    return _write_result(task, tag, metrics, skipped, rounds, embed_seconds, start, out)


MAJORITY = "majority"  # `--upstream majority`: the trivial baseline, no model


def majority_task(task: HearTask, out: Path) -> dict:
    """The trivial baseline of a task, scored like a model (OUT/results.json): scene tasks score every test
    clip with each class's share of the training clips (top-1: the majority class; mAP and AUC: the
    constant scores), event tasks predict no event (onset F 0, segment error rate 1)."""
    start = time.perf_counter()
    table, metrics, skipped = _task_metrics(task)
    index = {label: i for i, label in enumerate(task.labels)}

    def hot(split: str) -> np.ndarray:
        clips = task.label_file(split)
        y = np.zeros((len(clips), len(task.labels)), dtype=np.float32)
        for row, name in enumerate(sorted(clips)):
            y[row, [index[str(label)] for label in clips[name]]] = 1.0
        return y

    rounds = []
    for split in task.data_splits:
        if task.embedding_type == "scene":
            prior = np.concatenate([hot(s) for s in split["train"]]).mean(0)
            y_te = np.concatenate([hot(s) for s in split["test"]])
            scores = np.tile(prior + 1e-9 * np.arange(len(prior))[::-1], (len(y_te), 1))  # ties: first class
            test = {m: table[m](scores, y_te) for m in metrics}
        else:
            refs = {name: events for s in split["test"] for name, events in task.label_file(s).items()}
            test = {m: table[m]({name: [] for name in refs}, refs) for m in metrics}
        rounds.append({"split": split, "test": test})
    return _write_result(task, MAJORITY, metrics, skipped, rounds, 0.0, start, out)


def load_hear_model(upstream: str, layer: int | None = None) -> HearModel:
    """A HEAR model from a path (export dir, HF dir, fairseq .pt) or a registry name, which has seeded random
    weights (a control; `load_upstream_for_inference` warns); a `@random` suffix re-initialises the weights
    as the benchmark's untrained controls do (same architecture, same seed)."""
    from speechrep.downstream.runner import RANDOM_INIT_SEED, RANDOM_SUFFIX, reinitialise

    source = upstream.removesuffix(RANDOM_SUFFIX)
    model = load_model(source, layer=layer) if Path(source).exists() else \
        load_model("", upstream=source, layer=layer)
    if source != upstream:
        reinitialise(model.upstream, RANDOM_INIT_SEED)
    return model


def evaluate_tasks(upstream: str, tasks: str | Path, out: str | Path, layer: int | None = None,
                   cfg: HearEvalConfig | None = None) -> list[dict]:
    """Every task under `tasks` (one folder or a folder of folders) → OUT/<task>/results.json each;
    `upstream` "majority" scores the trivial baseline (`majority_task`)."""
    paths = find_tasks(tasks)
    if upstream == MAJORITY and not Path(upstream).exists():
        return [majority_task(task, Path(out) / task.name) for task in map(read_task, paths)]
    model = load_hear_model(upstream, layer)
    # the weights' fingerprint keeps a re-trained model at the same path from reading old embeddings
    tag = f"{upstream}#{upstream_fingerprint(model.upstream)}" + ("" if layer is None else f"@layer{layer}")
    return [evaluate_task(task, model, Path(out) / task.name, tag, cfg) for task in map(read_task, paths)]


def results_table(results: list[dict]) -> str:
    """A plain-text table: task, type, each metric's test mean ± std over rounds, time."""
    lines = [f"{'task':<24} {'type':<6} {'metric':<24} {'test':>16} {'rounds':>6} {'seconds':>8}"]
    for r in results:
        for m, v in r["test"].items():
            score = f"{v:.4f} ± {r['test_std'][m]:.4f}"
            lines.append(f"{r['task']:<24} {r['embedding_type']:<6} {m:<24} {score:>16} "
                         f"{len(r['rounds']):>6} {r['seconds']:>8.1f}")
    return "\n".join(lines) + "\n"

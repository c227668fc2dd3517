"""The shared frame of every pre-training method: unlabeled data in, the training loop, an exported upstream out.

A method is one file, `speechrep/pretrain/<method>.py`, read top to bottom (STYLE.md §3):

    @dataclass
    class APCConfig:
        upstream: str = "apc"                                  # hub architecture to train
        model: dict[str, Any] = field(default_factory=dict)    # overrides of its hub config (e.g. num_layers: 2)
        n_future: int = 3                                      # objective hyper-parameters
        data: PretrainData = field(default_factory=PretrainData)
        train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000, lr=1e-3))

    class APCObjective(nn.Module):                             # pre-training-only heads live here, not in the hub
        def __init__(self, upstream: nn.Module, cfg: APCConfig): ...
        def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]: ...   # loss, scalars to log

    def run(cfg: APCConfig, data: Path, run_dir: Path) -> Path:
        upstream = load_upstream(cfg.upstream, **cfg.model)
        return run_pretraining("apc", APCObjective(upstream, cfg), upstream, cfg, data, run_dir)

and one line in `METHODS` (speechrep/pretrain/__init__.py). `speechrep/configs/pretrain/<method>.yaml` holds the
paper's settings and `speechrep/configs/pretrain/<preset>/<method>.yaml` (e.g. `tiny`) a preset layered on it. `speechrep pretrain --method apc --data CORPUS --out RUN [--preset tiny]
[key=value ...]` runs it; starting the same command again resumes; under `torchrun` it runs DDP. `--data`
may also be a Shar directory (`speechrep shard`): training then streams its `unlabeled/train` shards (each
rank its own, reshuffled per epoch) and a resume skips the consumed batches without decoding their audio.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from torch import Tensor, nn

from speechrep.audio.features import fbank
from speechrep.config import config_to_dict
from speechrep.data.batching import AudioBatch, audio_batches, load_cuts
from speechrep.data.shar import SharSplit, has_split, is_shar_dir, open_shar
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig, is_main_process, prepare_run_dir, train, write_results
from speechrep.train.run_dir import git_revision, package_versions
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import export_upstream, load_upstream

log = logging.getLogger(__name__)

UNLABELED = "unlabeled"


@dataclass
class PretrainData:
    """Which unlabeled audio a method sees and how it is batched."""

    max_duration: float = 60.0          # seconds of audio per batch and rank (before grad_accum)
    max_utterance: float = 15.0         # longer utterances are cut into windows of at most this many seconds
    min_utterance: float = 1.0          # shorter windows/utterances are dropped
    dev_fraction: float = 0.05          # held out when the data has no dev split (a single manifest)
    max_dev_batches: int = 20           # bounds the dev evaluation
    num_workers: int = 0                # DataLoader worker processes decoding audio


def load_unlabeled(data: str | Path, cfg: PretrainData) -> tuple[CutSet | SharSplit, CutSet]:
    """(train, dev) cuts: a corpus directory's `unlabeled` subset, or one manifest with a held-out dev share;
    from a Shar directory, train is a stream (a `SharSplit`) and dev the part of it that evaluation reads."""
    data = Path(data)
    if is_shar_dir(data):
        return _shar_unlabeled(data, cfg)
    if data.is_dir():
        train_cuts = load_cuts(data, UNLABELED, "train")
        dev_path = data / UNLABELED / "dev.jsonl.gz"
        dev_cuts = load_cuts(dev_path) if dev_path.is_file() else None
    else:
        train_cuts, dev_cuts = load_cuts(data), None
    if dev_cuts is None:
        held = _held_out(train_cuts.ids, cfg)
        dev_cuts = CutSet.from_cuts(c for c in train_cuts if c.id in held)
        train_cuts = CutSet.from_cuts(c for c in train_cuts if c.id not in held)
    train_cuts = _windows(train_cuts, cfg)
    dev_cuts = _windows(dev_cuts, cfg)
    if len(train_cuts) == 0:
        raise SpeechrepError(f"{data}: no unlabeled utterance of at least {cfg.min_utterance} s to train on")
    return train_cuts, dev_cuts


def _held_out(ids: Iterable[str], cfg: PretrainData) -> set[str]:
    """The dev share of a split without a dev split: a stable choice, every k-th cut by sorted id."""
    step = max(2, round(1 / max(cfg.dev_fraction, 1e-6)))
    return set(sorted(ids)[::step])


def _windows(cuts: CutSet, cfg: PretrainData) -> CutSet:
    """Cut long utterances into windows of at most `max_utterance` s, keep those of at least `min_utterance` s."""
    return CutSet.from_cuts(_lazy_windows(cuts, cfg))


def _lazy_windows(cuts: CutSet, cfg: PretrainData) -> CutSet:
    """`_windows` as a lazy CutSet (for streams)."""
    windows = cuts.cut_into_windows(duration=cfg.max_utterance)
    return windows.filter(partial(_long_enough, seconds=cfg.min_utterance))


def _long_enough(cut: Cut, seconds: float) -> bool:
    return cut.duration >= seconds


def _held(cut: Cut, ids: set[str], keep: bool) -> bool:
    return (cut.id in ids) == keep


def _shar_unlabeled(data: Path, cfg: PretrainData) -> tuple[SharSplit, CutSet]:
    """(train stream, dev cuts) of a Shar directory's `unlabeled` subset.

    Dev is `unlabeled/dev`, or else the `dev_fraction` share of train (the same cuts as a corpus directory
    would hold out, found on the manifests); of it only the windows that the `max_dev_batches` evaluation
    batches can reach are read, once, and kept in memory."""
    train = open_shar(data, UNLABELED, "train")
    if has_split(data, UNLABELED, "dev"):
        dev = open_shar(data, UNLABELED, "dev")
    else:
        held = _held_out((c.id for c in train.cuts(audio=False)), cfg)
        dev = train.with_transform(lambda cuts: cuts.filter(partial(_held, ids=held, keep=True)))
        train = train.with_transform(lambda cuts: cuts.filter(partial(_held, ids=held, keep=False)))
    if train.num_cuts == 0:
        raise SpeechrepError(f"{data}: no unlabeled utterance to train on")
    reach = cfg.max_dev_batches * cfg.max_duration  # ordered batches of at most max_duration s each
    dev_cuts, seconds = [], 0.0
    for cut in _lazy_windows(dev.cuts(), cfg):
        if seconds >= reach:
            break
        dev_cuts.append(cut)
        seconds += cut.duration
    return train.with_transform(lambda cuts: _lazy_windows(cuts, cfg)), CutSet.from_cuts(dev_cuts)


def objective_loss(model: nn.Module, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
    """The loss_fn of every method: the objective module maps a batch to (loss, scalars)."""
    return model(batch)


def run_pretraining(method: str, objective: nn.Module, upstream: nn.Module, cfg: Any, data: str | Path,
                    run_dir: str | Path,
                    after_step: Callable[[nn.Module, int], None] | None = None) -> Path:
    """Train `objective` (which owns `upstream`) with the shared loop, then export `upstream` to RUN_DIR/upstream."""
    run_dir = Path(run_dir)
    data_cfg: PretrainData = cfg.data
    train_cfg: TrainConfig = cfg.train
    prepare_run_dir(run_dir, cfg)
    train_cuts, dev_cuts = load_unlabeled(data, data_cfg)
    if isinstance(train_cuts, SharSplit):
        log.info("%s: streaming %d shards of %s (%d utterances, %.2f h), %d dev windows", method,
                 len(train_cuts.shards), train_cuts.name, train_cuts.num_cuts, train_cuts.seconds / 3600,
                 len(dev_cuts))
    else:
        log.info("%s: %d training windows (%.2f h), %d dev", method, len(train_cuts),
                 sum(c.duration for c in train_cuts) / 3600, len(dev_cuts))
    batches = audio_batches(train_cuts, data_cfg.max_duration, shuffle=True, seed=train_cfg.seed,
                            num_workers=data_cfg.num_workers)
    dev_batches = audio_batches(dev_cuts, data_cfg.max_duration, shuffle=False, num_workers=data_cfg.num_workers)
    device_of = lambda m: next(m.parameters()).device  # noqa: E731

    def evaluate(model: nn.Module) -> dict[str, float]:
        # Fixed masks/negatives on dev, and the training RNG left exactly as it was (exact resume).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            sums: dict[str, float] = {}
            n = 0
            for i, batch in enumerate(dev_batches(0)):
                if i >= data_cfg.max_dev_batches:
                    break
                loss, scalars = model(batch.to(device_of(model)))
                for k, v in {"loss": float(loss), **scalars}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        return {k: v / max(n, 1) for k, v in sums.items()}

    state = train(objective, batches, objective_loss, train_cfg, run_dir, evaluate=evaluate, after_step=after_step)
    out = run_dir / "upstream"
    if is_main_process():
        provenance = {"method": method, "data": str(data), "steps": state.step, "config": config_to_dict(cfg),
                      "versions": package_versions(), "git_revision": git_revision()}
        export_upstream(upstream, out, provenance)
        write_results(run_dir, {"method": method, "steps": state.step, "dev": state.last_eval,
                                "best_dev_step": state.best_step, "upstream": str(out)})
        log.info("%s: exported %s", method, out)
    return out


def fbank_statistics(
    cuts: CutSet | SharSplit, num_mel_bins: int, window_type: str, max_seconds: float,
    max_duration: float = 60.0
) -> tuple[Tensor, Tensor]:
    """Per-bin mean and standard deviation of the log-mel filterbank over (up to `max_seconds` of) `cuts`."""
    total = torch.zeros(num_mel_bins, dtype=torch.float64)
    square = torch.zeros(num_mel_bins, dtype=torch.float64)
    count, seconds = 0, 0.0
    with torch.inference_mode():
        for batch in audio_batches(cuts, max_duration, shuffle=False)(0):
            mels, lengths = fbank(
                batch.wavs, batch.wav_lens, num_mel_bins=num_mel_bins, window_type=window_type
            )
            frames = mels[padding_mask(lengths, mels.shape[1])].double()
            total += frames.sum(0)
            square += frames.square().sum(0)
            count += len(frames)
            seconds += float(batch.wav_lens.sum()) / 16000
            if seconds >= max_seconds:
                break
    mean = total / max(count, 1)
    std = (square / max(count, 1) - mean.square()).clamp(min=1e-8).sqrt()
    return mean.float(), std.float()


def load_encoder(cfg: Any, data: str | Path) -> nn.Module:
    """The hub encoder `cfg.upstream` with the `cfg.model` overrides. One that standardises its log-mel with
    corpus statistics (`CorpusStatistics`: BEST-RQ, and APC or Mockingjay/TERA with `corpus_norm`) gets those
    of (up to `cfg.stats_seconds` of) the training audio; a resumed run reloads its own."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    if hasattr(upstream, "feature_mean"):
        set_corpus_statistics(upstream, data, cfg)
    return upstream


def set_corpus_statistics(upstream: nn.Module, data: str | Path, cfg: Any) -> None:
    """Standardise the upstream's log-mel with the statistics of (up to `cfg.stats_seconds` of) the training audio."""
    train_cuts, _ = load_unlabeled(data, cfg.data)
    c = upstream.config
    window = getattr(c, "window_type", "povey")  # APC, Mockingjay/TERA read the default Kaldi window
    mean, std = fbank_statistics(train_cuts, c.num_mel_bins, window, cfg.stats_seconds)
    upstream.set_feature_stats(mean, std)

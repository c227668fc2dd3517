"""Prosody reconstruction: frame log-F0, voicing and energy from the features (Lin et al., SLT 2022 probe).

Targets come from each cut's own audio: `speechrep.audio.pitch_track` (YIN) on the feature frame grid, hop =
the upstream stride, frame i centred at (i + 0.5)·stride like the frame labels of PF. They do not depend on
the upstream otherwise, and are computed once per cut and kept in memory. Log-F0 (log2 Hz, voiced frames
only) and energy (dB) are z-normalised with the train split's statistics.

Head: a two-layer frame MLP with three outputs (normalised log-F0, voicing logit, normalised energy); loss:
MSE on log-F0 over gold-voiced frames + BCE on voicing + MSE on energy over every valid frame.
Metrics: `f0_rmse_cents` (gold-voiced frames; the headline: pitch is what the probe asks about, energy is
nearly linear in any filterbank and voicing saturates quickly), `voicing_error` (frame error rate),
`energy_corr` (Pearson over every valid frame), and `f0_rmse_cents_mean_predictor`, the same RMSE for
predicting the train mean everywhere (the trivial baseline any probe must beat).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lhotse import CutSet
from torch import Tensor, nn

from speechrep.audio.io import resample
from speechrep.audio.pitch import pitch_track
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask

SAMPLE_RATE = 16000  # the rate of every upstream's input, and so of the feature frame grid
CENTS_PER_OCTAVE = 1200.0


@dataclass
class ProsodyConfig:
    """A frame MLP on the weighted sum: AdamW lr 1e-3, batch about 32 utterances, 50k steps, dev every 1k."""

    subset: str = "pr"  # any subset of sentences (pr, asr of mini-SUPERB)
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    hidden_size: int = 256  # the frame MLP's hidden layer
    fmin: float = 50.0  # pitch search range of the tracker, Hz
    fmax: float = 500.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=50_000, lr=1e-3, schedule="constant", eval_every=1000, log_every=100))


@dataclass(frozen=True)
class FrameTargets:
    """One cut's targets on its feature frames: log2-F0 (0 where unvoiced), voicing and energy in dB."""

    log_f0: np.ndarray  # (N,) float64
    voiced: np.ndarray  # (N,) bool
    energy_db: np.ndarray  # (N,) float64


@dataclass(frozen=True)
class Normalizer:
    """Train-split mean and std of voiced log2-F0 and of frame energy, for z-normalised regression targets."""

    f0_mean: float
    f0_std: float
    energy_mean: float
    energy_std: float


class ProsodyTargets:
    """Pitch tracks of cuts on a feature frame grid (hop = `stride`), computed once per cut and kept."""

    def __init__(self, stride: int, fmin: float = 50.0, fmax: float = 500.0):
        self.stride, self.fmin, self.fmax = int(stride), float(fmin), float(fmax)
        self._cache: dict[str, FrameTargets] = {}

    def _track(self, cut) -> FrameTargets:  # a lhotse cut
        audio = cut.load_audio()
        if audio.ndim != 2 or audio.shape[0] != 1 or audio.shape[1] == 0:
            raise SpeechrepError(f"cut {cut.id!r}: prosody targets need mono, non-empty audio, "
                                 f"got shape {tuple(audio.shape)}")
        wav = audio[0]
        if cut.sampling_rate != SAMPLE_RATE:
            wav = resample(wav, cut.sampling_rate, SAMPLE_RATE).numpy()
        track = pitch_track(wav, SAMPLE_RATE, self.stride, fmin=self.fmin, fmax=self.fmax)
        log_f0 = np.where(track.voiced, np.log2(np.where(track.voiced, track.f0_hz, 1.0)), 0.0)
        return FrameTargets(log_f0, track.voiced, track.energy_db)

    def __call__(self, cut, num_frames: int) -> FrameTargets:  # a lhotse cut
        """The cut's targets on exactly `num_frames` frames (extra frames: unvoiced, edge energy)."""
        if cut.id not in self._cache:
            self._cache[cut.id] = self._track(cut)
        full = self._cache[cut.id]
        have = len(full.log_f0)
        if num_frames <= have:
            n = num_frames
            return FrameTargets(full.log_f0[:n], full.voiced[:n], full.energy_db[:n])
        extra = num_frames - have
        return FrameTargets(np.pad(full.log_f0, (0, extra)), np.pad(full.voiced, (0, extra)),
                            np.pad(full.energy_db, (0, extra), mode="edge"))

    def normalizer(self, cuts: CutSet) -> Normalizer:
        """Statistics of voiced log2-F0 and of energy over every frame of `cuts` (e.g. the train split)."""
        tracks = [self(c, int(np.ceil(c.duration * SAMPLE_RATE / self.stride))) for c in cuts]
        log_f0 = np.concatenate([t.log_f0[t.voiced] for t in tracks])
        energy = np.concatenate([t.energy_db for t in tracks])
        if len(log_f0) < 2:
            raise SpeechrepError(f"prosody: fewer than 2 voiced frames in {len(tracks)} train cuts "
                                 f"(no speech in the subset?)")
        return Normalizer(float(log_f0.mean()), float(log_f0.std()) or 1.0,
                          float(energy.mean()), float(energy.std()) or 1.0)

    def batch(self, cuts: CutSet, lengths: Tensor, max_frames: int, norm: Normalizer) -> dict[str, Tensor]:
        """(B, max_frames) normalised log-F0 `f0`, `voiced` (bool), normalised `energy`, the `valid` mask."""
        shape = (len(cuts), max_frames)
        f0, energy = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        voiced = np.zeros(shape, bool)
        for i, (cut, n) in enumerate(zip(cuts, lengths.tolist())):
            t = self(cut, n)
            f0[i, :n] = np.where(t.voiced, (t.log_f0 - norm.f0_mean) / norm.f0_std, 0.0)
            voiced[i, :n] = t.voiced
            energy[i, :n] = (t.energy_db - norm.energy_mean) / norm.energy_std
        device = lengths.device
        return {"f0": torch.from_numpy(f0).to(device), "voiced": torch.from_numpy(voiced).to(device),
                "energy": torch.from_numpy(energy).to(device), "valid": padding_mask(lengths, max_frames)}


class FrameMLP(nn.Module):
    """Two linear layers per frame with a ReLU between: (B, T, H) → (B, T, outputs)."""

    def __init__(self, input_size: int, outputs: int, hidden_size: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU(),
                                 nn.Linear(hidden_size, outputs))

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.net(features)


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two 1-D tensors (0.0 when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else 0.0


def build(cfg: ProsodyConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Targets from the tracker on the feature grid, train-split normalisation, a frame MLP, three losses."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    targets = ProsodyTargets(features.stride, cfg.fmin, cfg.fmax)
    norm = targets.normalizer(train_cuts)
    head = FrameMLP(features.hidden_size, 3, cfg.hidden_size)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> tuple[Tensor, dict[str, float]]:
        out, lengths = model(batch)
        gold = targets.batch(batch.cuts, lengths, out.shape[1], norm)
        valid, voiced = gold["valid"], gold["voiced"] & gold["valid"]
        f0_loss = F.mse_loss(out[..., 0][voiced], gold["f0"][voiced]) if voiced.any() else out.sum() * 0.0
        voicing_loss = F.binary_cross_entropy_with_logits(out[..., 1][valid], voiced[valid].float())
        energy_loss = F.mse_loss(out[..., 2][valid], gold["energy"][valid])
        parts = {"f0_mse": f0_loss.item(), "voicing_bce": voicing_loss.item(),
                 "energy_mse": energy_loss.item()}
        return f0_loss + voicing_loss + energy_loss, parts

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        f0_err, f0_gold, voicing_wrong, energy_pred, energy_gold = [], [], [], [], []
        for batch in batches:
            out, lengths = model(batch)
            gold = targets.batch(batch.cuts, lengths, out.shape[1], norm)
            valid, voiced = gold["valid"], gold["voiced"] & gold["valid"]
            f0_err.append((out[..., 0][voiced] - gold["f0"][voiced]).cpu())
            f0_gold.append(gold["f0"][voiced].cpu())
            voicing_wrong.append(((out[..., 1] > 0) != gold["voiced"])[valid].cpu())
            energy_pred.append(out[..., 2][valid].cpu())
            energy_gold.append(gold["energy"][valid].cpu())
        scale = CENTS_PER_OCTAVE * norm.f0_std  # normalised log2-F0 units → cents
        err, gold_f0 = torch.cat(f0_err).double(), torch.cat(f0_gold).double()
        if len(err) == 0:
            raise SpeechrepError(f"prosody: no voiced frame in the evaluated split of subset {cfg.subset!r}")
        return {"f0_rmse_cents": float(err.pow(2).mean().sqrt()) * scale,
                "f0_rmse_cents_mean_predictor": float(gold_f0.pow(2).mean().sqrt()) * scale,
                "voicing_error": float(torch.cat(voicing_wrong).float().mean()),
                "energy_corr": pearson(torch.cat(energy_pred), torch.cat(energy_gold))}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="prosody", config=ProsodyConfig, build=build, metric="f0_rmse_cents",
                higher_is_better=False, best_value=0.0, percent=False, frame_level=True)

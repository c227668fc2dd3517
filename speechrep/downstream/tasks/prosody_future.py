"""Future prosody prediction: from the features up to frame t, log-F0 and energy at t + 0.12/0.24/0.5/1.0 s.

The probe of Lin et al. (SLT 2022), where FBANK+RNN scores pitch MSE 0.049–0.157 over the four horizons and
HuBERT Base 0.029–0.042. Targets are the `prosody` task's (YIN on the feature grid, z-normalised with the
train split's voiced log2-F0 statistics); a frame's target at horizon h is frame t + round(h / frame_shift),
scored only where that frame exists and is voiced (energy: where it exists). The head is a one-layer
unidirectional GRU, so it cannot look ahead (the upstream itself may: a transformer sees the whole utterance,
as in the paper). Metrics: `f0_mse_<h>ms` per horizon on normalised log-F0, their mean `f0_mse_mean` (the
headline), `energy_mse_<h>ms`, and `f0_mse_mean_predictor`, the mean MSE of predicting the train mean.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.downstream.tasks.prosody import ProsodyTargets
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.train import TrainConfig


@dataclass
class ProsodyFutureConfig:
    """A causal GRU on the weighted sum: AdamW lr 1e-3, batch about 32 utterances, 50k steps, dev every 1k."""

    subset: str = "pr"  # any subset of sentences (pr, asr of mini-SUPERB)
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    horizons: list[float] = field(default_factory=lambda: [0.12, 0.24, 0.5, 1.0])  # seconds ahead
    hidden_size: int = 256  # the GRU's
    fmin: float = 50.0  # pitch search range of the tracker, Hz
    fmax: float = 500.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=50_000, lr=1e-3, schedule="constant", eval_every=1000, log_every=100))


class CausalGRU(nn.Module):
    """A unidirectional GRU + linear per frame: output t depends on frames ≤ t only (padding comes after)."""

    def __init__(self, input_size: int, outputs: int, hidden_size: int = 256):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, outputs)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.output(self.gru(features)[0])


def shift_left(values: Tensor, mask: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """Values and mask `frames` steps ahead: out[:, t] = values[:, t + frames], mask False past the end."""
    if frames >= values.shape[1]:
        return torch.zeros_like(values), torch.zeros_like(mask)
    pad_v = values.new_zeros(values.shape[0], frames)
    pad_m = mask.new_zeros(mask.shape[0], frames)
    return torch.cat([values[:, frames:], pad_v], 1), torch.cat([mask[:, frames:], pad_m], 1)


def horizon_name(seconds: float) -> str:
    """Metric suffix of a horizon: 0.12 → '120ms'."""
    return f"{round(seconds * 1000)}ms"


def build(cfg: ProsodyFutureConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """The prosody targets shifted to each horizon, a causal GRU with two outputs per horizon, MSE."""
    if not cfg.horizons or any(h <= 0 for h in cfg.horizons):
        raise ConfigError(f"prosody_future.horizons must be positive seconds, got {cfg.horizons}")
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    targets = ProsodyTargets(features.stride, cfg.fmin, cfg.fmax)
    norm = targets.normalizer(train_cuts)
    steps = [max(1, round(h / features.frame_shift)) for h in cfg.horizons]
    names = [horizon_name(h) for h in cfg.horizons]
    head = CausalGRU(features.hidden_size, 2 * len(steps), cfg.hidden_size)

    def errors(model: nn.Module, batch: FeatureBatch) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """The head output and, per horizon, squared errors: F0 and mean-predictor F0 on voiced future
        frames, energy on existing ones."""
        out, lengths = model(batch)
        gold = targets.batch(batch.cuts, lengths, out.shape[1], norm)
        result = []
        for k, step in enumerate(steps):
            f0, voiced = shift_left(gold["f0"], gold["voiced"] & gold["valid"], step)
            energy, exists = shift_left(gold["energy"], gold["valid"], step)
            # The train mean is 0 in normalised units, so the mean predictor's squared error is f0².
            result.append(((out[..., 2 * k] - f0)[voiced].pow(2), f0[voiced].pow(2),
                           (out[..., 2 * k + 1] - energy)[exists].pow(2)))
        return out, result

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> tuple[Tensor, dict[str, float]]:
        out, per_horizon = errors(model, batch)
        f0 = [e.mean() for e, _, _ in per_horizon if len(e)]
        energy = [e.mean() for _, _, e in per_horizon if len(e)]
        if not energy:  # every cut is shorter than the shortest horizon: nothing to learn from this batch
            return out.sum() * 0.0, {}
        f0_loss = torch.stack(f0).mean() if f0 else energy[0] * 0.0
        energy_loss = torch.stack(energy).mean()
        return f0_loss + energy_loss, {"f0_mse": f0_loss.item(), "energy_mse": energy_loss.item()}

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        squares: list[list[list[Tensor]]] = [[[], [], []] for _ in steps]  # per horizon: f0, mean, energy
        for batch in batches:
            for k, errs in enumerate(errors(model, batch)[1]):
                for bucket, e in zip(squares[k], errs):
                    bucket.append(e.cpu())
        metrics: dict[str, float] = {}
        baseline = 0.0
        for name, (f0, mean_f0, energy) in zip(names, squares):
            f0, mean_f0, energy = (torch.cat(x).double() for x in (f0, mean_f0, energy))
            if len(f0) == 0:
                raise SpeechrepError(f"prosody_future: no voiced frame {name} ahead in the evaluated split "
                                     f"of subset {cfg.subset!r} (utterances shorter than the horizon?)")
            metrics[f"f0_mse_{name}"] = float(f0.mean())
            metrics[f"energy_mse_{name}"] = float(energy.mean())
            baseline += float(mean_f0.mean()) / len(names)
        metrics["f0_mse_mean"] = sum(metrics[f"f0_mse_{n}"] for n in names) / len(names)
        metrics["f0_mse_mean_predictor"] = baseline
        return metrics

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="prosody_future", config=ProsodyFutureConfig, build=build, metric="f0_mse_mean",
                higher_is_better=False, best_value=0.0, percent=False, frame_level=True)

"""SS, source separation (SUPERB; Libri2Mix): BiLSTM masks for 2 speakers with PIT, SI-SDR improvement.

Input: the upstream's features of the mixture (the cut's audio). Targets: the Recording fields `source1`
and `source2` of the cut (`cut.load_source1()`), whose sum is the mixture. The head predicts one [0, 1] mask
per source on the mixture's STFT (n_fft 512, hop 160, Hann); each mask is trained with the phase-sensitive
magnitude MSE of SE, under the source permutation with the lower loss per mixture (utterance-level PIT).
Estimates use the mixture's phase. Reported: SI-SDRi, the SI-SDR gain over the unprocessed mixture, averaged
over sources and mixtures under the best permutation (the headline, which also picks the checkpoint on dev),
and the SI-SDR itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor, nn

from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import MaskBiLSTM
from speechrep.downstream.metrics import pit_assign, pit_loss, reorder_sources, si_sdr, si_sdr_improvement
from speechrep.downstream.spectral import (HOP, N_FFT, istft, load_waves, masked_mse, masks_and_mixture,
                                           phase_sensitive_target, stft, stft_lengths)
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig

SOURCE_FIELDS = ("source1", "source2")
# Topline of the SUPERB-style score: the mean SI-SDRi of oracle masks in this head's output range (the
# phase-sensitive target / |X|, clipped to [0, 1]) over the 16 mixtures of the tiny mini-SUPERB (seed 0).
ORACLE_SI_SDRI = 16.6


@dataclass
class SSConfig:
    """SUPERB SS (s3prl separation_stft): 3-layer BiLSTM (896 units), AdamW lr 1e-4, batch 8, 150k steps."""

    subset: str = "ss"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 80.0  # seconds of audio per batch (about 8 Libri2Mix mixtures)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    hidden_size: int = 896
    num_layers: int = 3
    dropout: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=150_000, lr=1e-4, schedule="constant", eval_every=2000, log_every=500))


def source_spectra(batch: FeatureBatch, device: torch.device, length: int) -> Tensor:
    """(B, 2, T, F) complex spectra of the two reference sources, padded or trimmed to `length` samples."""
    waves = [load_waves(batch.cuts, name, device, length)[0] for name in SOURCE_FIELDS]
    return torch.stack([stft(w, N_FFT, HOP) for w in waves], 1)


def build(cfg: SSConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """A 2-source BiLSTM mask head on the mixture STFT, PIT phase-sensitive MSE, SI-SDRi of the estimates."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    head = MaskBiLSTM(features.hidden_size, num_sources=len(SOURCE_FIELDS), n_fft=N_FFT, hop_length=HOP,
                      feature_stride=features.stride, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      dropout=cfg.dropout)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> Tensor:
        masks, waves, mixture, lengths = masks_and_mixture(model, batch)
        sources = source_spectra(batch, masks.device, waves.shape[1])
        targets = phase_sensitive_target(sources, mixture[:, None])
        estimates = masks * mixture.abs()[:, None]
        # (B, estimate, reference) losses; PIT keeps the cheaper assignment per mixture.
        pairwise = masked_mse(estimates[:, :, None], targets[:, None], stft_lengths(lengths))
        loss, _ = pit_assign(pairwise)
        return loss.mean()

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        improvements, sdrs = [], []
        for batch in batches:
            masks, mixture, spectrum, lengths = masks_and_mixture(model, batch)
            batch_size, sources = masks.shape[:2]
            estimates = istft((masks * spectrum[:, None]).flatten(0, 1), mixture.shape[1], N_FFT, HOP)
            estimates = estimates.view(batch_size, sources, -1).float().cpu()
            references = torch.stack([load_waves(batch.cuts, name, torch.device("cpu"), mixture.shape[1])[0]
                                      for name in SOURCE_FIELDS], 1)
            mixture = mixture.float().cpu()
            for estimate, reference, mix, n in zip(estimates, references, mixture, lengths.tolist()):
                estimate, reference = estimate[None, :, :n], reference[None, :, :n]
                _, perm = pit_loss(estimate, reference)
                estimate = reorder_sources(estimate, perm)[0]
                improvements.append(si_sdr_improvement(estimate, reference[0], mix[None, :n]).mean())
                sdrs.append(si_sdr(estimate, reference[0]).mean())
        if not improvements:
            raise SpeechrepError("SS: nothing to evaluate")
        return {"si_sdri": float(torch.stack(improvements).mean()), "si_sdr": float(torch.stack(sdrs).mean())}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="ss", config=SSConfig, build=build, metric="si_sdri", higher_is_better=True,
                best_value=ORACLE_SI_SDRI, frame_level=True)

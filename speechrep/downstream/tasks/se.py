"""SE, speech enhancement (SUPERB; VoiceBank-DEMAND): BiLSTM mask on the noisy STFT, PESQ, STOI, SI-SDR.

Input: the upstream's features of the noisy recording (the cut's audio). Target: `cut.clean` (a lhotse
Recording field, `cut.load_clean()`) of the same length. The head predicts a [0, 1] mask per STFT bin of the
noisy input (n_fft 512, hop 160, Hann; frames of a coarser upstream are repeated to the STFT rate);
training minimises the mean squared error between the masked noisy magnitude and the phase-sensitive
target |C|·cos(∠C − ∠X), clipped to [0, |X|] (s3prl's "NPSM" MSE objective). The estimate is the masked
spectrum with the noisy phase, inverted by iSTFT. Reported per utterance and averaged: wide-band PESQ (the
headline, which also picks the checkpoint on dev), STOI and SI-SDR against the clean reference, and SI-SDRi,
the SI-SDR gain over the noisy input.
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
from speechrep.downstream.metrics import pesq_wb, si_sdr, si_sdr_improvement, stoi
from speechrep.downstream.spectral import (HOP, N_FFT, istft, load_waves, masked_mse, masks_and_mixture,
                                           phase_sensitive_target, stft, stft_lengths)
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig

SAMPLE_RATE = 16000


@dataclass
class SEConfig:
    """SUPERB SE (s3prl enhancement_stft): 3-layer BiLSTM (896 units), AdamW lr 1e-4, batch 8, 150k steps."""

    subset: str = "se"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 24.0  # seconds of audio per batch (about 8 VoiceBank utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    hidden_size: int = 896
    num_layers: int = 3
    dropout: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=150_000, lr=1e-4, schedule="constant", eval_every=1250, log_every=250))


def build(cfg: SEConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """A BiLSTM mask head on the noisy STFT, phase-sensitive MSE, PESQ/STOI/SI-SDR of the enhanced waves."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    head = MaskBiLSTM(features.hidden_size, num_sources=1, n_fft=N_FFT, hop_length=HOP,
                      feature_stride=features.stride, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      dropout=cfg.dropout)

    def masks_and_spectra(model: nn.Module, batch: FeatureBatch) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, F) masks, the noisy spectra and the noisy wave lengths."""
        masks, _, spectrum, lengths = masks_and_mixture(model, batch)
        return masks[:, 0], spectrum, lengths

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> Tensor:
        masks, noisy, lengths = masks_and_spectra(model, batch)
        clean, _ = load_waves(batch.cuts, "clean", masks.device, int(lengths.max()))
        target = phase_sensitive_target(stft(clean, N_FFT, HOP), noisy)
        return masked_mse(masks * noisy.abs(), target, stft_lengths(lengths)).mean()

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        totals = {"pesq": 0.0, "stoi": 0.0, "si_sdr": 0.0, "si_sdri": 0.0}
        count = 0
        for batch in batches:
            masks, noisy, lengths = masks_and_spectra(model, batch)
            enhanced = istft(masks * noisy, int(lengths.max()), N_FFT, HOP).float().cpu()
            clean, _ = load_waves(batch.cuts, "clean", torch.device("cpu"), enhanced.shape[1])
            noisy_waves, _ = load_waves(batch.cuts, None, torch.device("cpu"))
            for estimate, reference, noisy_wave, n in zip(enhanced, clean, noisy_waves, lengths.tolist()):
                estimate, reference = estimate[:n], reference[:n]
                totals["si_sdr"] += float(si_sdr(estimate, reference))
                totals["si_sdri"] += float(si_sdr_improvement(estimate, reference, noisy_wave[:n]))
                totals["pesq"] += pesq_wb(reference.numpy(), estimate.numpy(), SAMPLE_RATE)
                totals["stoi"] += stoi(reference.numpy(), estimate.numpy(), SAMPLE_RATE)
                count += 1
        if count == 0:
            raise SpeechrepError("SE: nothing to evaluate")
        return {name: value / count for name, value in totals.items()}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="se", config=SEConfig, build=build, metric="pesq", higher_is_better=True,
                best_value=4.64, frame_level=True)  # the top of the wide-band PESQ (MOS-LQO) scale

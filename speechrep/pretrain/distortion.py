"""Distortions drawn on the fly during pre-training: one type per utterance from `distortions` (noise,
reverb, band_limit, clip, speed, clean), its parameter drawn uniformly from the configured range.

Used by DistilHuBERT's cross-distortion mapping (the student hears a distorted copy) and by robust MelHuBERT
pre-training (the model hears a distorted copy, its k-means targets stay those of the clean audio).
Benchmark test conditions are a separate, deterministic-per-utterance family: `speechrep.audio.conditions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from speechrep.audio import augment
from speechrep.data.batching import load_cuts
from speechrep.errors import ConfigError

DISTORTIONS = ("clean", "noise", "reverb", "band_limit", "clip", "speed")


@dataclass
class DistortionConfig:
    """Which distortions are drawn (uniformly, one per utterance) and the ranges of their parameters."""

    distortions: list[str] = field(default_factory=list)  # empty: no distortion
    snr_db: tuple[float, float] = (0.0, 20.0)
    noise_manifest: str | None = None  # lhotse manifest of noise recordings; None: synthetic coloured noise
    rt60: tuple[float, float] = (0.2, 0.8)
    band_low_hz: tuple[float, float] = (100.0, 500.0)
    band_high_hz: tuple[float, float] = (2500.0, 4000.0)
    clip_level: tuple[float, float] = (0.1, 0.5)  # share of the peak kept
    speed: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        unknown = [d for d in self.distortions if d not in DISTORTIONS]
        if unknown:
            raise ConfigError(f"key 'distortions': unknown {unknown}; choose from {', '.join(DISTORTIONS)}")
        if len(set(self.distortions)) != len(self.distortions):
            raise ConfigError(f"key 'distortions': repeated entries in {self.distortions}")
        for name in ("snr_db", "rt60", "band_low_hz", "band_high_hz", "clip_level", "speed"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"key {name!r}: range [{low}, {high}] is empty")


class Distorter:
    """Draws and applies one distortion type per utterance (numpy, on CPU), from speechrep.audio.augment."""

    def __init__(self, cfg: DistortionConfig, sample_rate: int = 16000):
        self.cfg, self.sample_rate = cfg, sample_rate
        self.noises: list[np.ndarray] = []
        if cfg.noise_manifest is not None and "noise" in cfg.distortions:
            self.noises = [c.load_audio()[0].astype(np.float32) for c in load_cuts(cfg.noise_manifest)]
            if not self.noises:
                raise ConfigError(f"key 'noise_manifest': {cfg.noise_manifest} holds no recording")

    def __call__(self, wav: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """(distorted copy of `wav`, its speed factor) for distortion `kind`."""
        cfg, sr = self.cfg, self.sample_rate
        if kind == "noise":
            if self.noises:
                noise = self.noises[rng.integers(len(self.noises))]
                noise = np.roll(noise, rng.integers(len(noise)))  # a random start, tiled by add_noise
            else:
                noise = augment.coloured_noise(rng, len(wav), exponent=float(rng.uniform(0.0, 2.0)))
            return augment.add_noise(wav, noise, float(rng.uniform(*cfg.snr_db))), 1.0
        if kind == "reverb":
            rir = augment.synthetic_rir(rng, sr, rt60=float(rng.uniform(*cfg.rt60)))
            return augment.reverberate(wav, rir), 1.0
        if kind == "band_limit":
            return augment.band_limit(
                wav, sr, float(rng.uniform(*cfg.band_low_hz)), float(rng.uniform(*cfg.band_high_hz))
            ), 1.0
        if kind == "clip":
            return augment.clip(wav, float(rng.uniform(*cfg.clip_level))), 1.0
        if kind == "speed":
            factor = float(rng.uniform(*cfg.speed))
            return augment.speed_perturb(wav, factor, sr), factor
        return wav, 1.0

    def batch(
        self, wavs: Tensor, wav_lens: Tensor, kinds: list[str], rng: np.random.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Distort each utterance of a padded batch: (wavs, lengths, speed factors) on the batch's device."""
        audio = wavs.detach().float().cpu().numpy()
        outs, factors = [], []
        for row, length, kind in zip(audio, wav_lens.tolist(), kinds):
            out, factor = self(row[:length], kind, rng)
            outs.append(out.astype(np.float32, copy=False))
            factors.append(factor)
        lens = torch.tensor([len(o) for o in outs])
        padded = torch.zeros(len(outs), int(lens.max()))
        for i, out in enumerate(outs):
            padded[i, : len(out)] = torch.from_numpy(out)
        return padded.to(wavs.device), lens.to(wavs.device), torch.tensor(factors, device=wavs.device)

"""WavLM pre-training (Chen et al. 2022, https://arxiv.org/abs/2110.13900): masked speech denoising and
prediction, on the WavLM architecture (gated relative position bias, `speechrep/upstream/wavlm.py`).

HuBERT's objective and label pipeline (`speechrep/pretrain/hubert.py`), with noisy or overlapped input:

    speechrep kmeans --features mfcc --data CORPUS --k 100 --out L1       # or a layer of a trained model
    speechrep pretrain --method wavlm --data CORPUS --out RUN labels=L1 [noise=NOISE_MANIFEST]

Denoising: a `mix_prob` share of the utterances of each training batch (the paper: 20 %) get a chunk added, at
a random position, shorter than `mix_max_ratio` (½) of the primary utterance, scaled so that the energy of the
primary utterance over that of the chunk is uniform in `mix_energy_db` (−5 to 5 dB). The chunk is taken, at a
random position, from another utterance of the batch, or with probability `noise_prob` from a noise
recording: a random stretch of the `noise` manifest (a lhotse CutSet; the paper uses the DNS challenge noise),
or, with no manifest, synthetic 1/f^e noise (e uniform in `noise_exponents`). The targets stay the k-means
labels of the primary utterance, so the model must find the primary speaker's content under the
interference. Every draw comes from torch's RNG, which the loop checkpoints: a resumed run mixes the same.
Dev evaluation runs on clean input (the objective is in eval mode there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from lhotse.cut import Cut
from torch import Tensor, nn

from speechrep.audio.augment import coloured_noise
from speechrep.data.batching import AudioBatch, load_cuts
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.pretrain import hubert
from speechrep.pretrain.common import run_pretraining
from speechrep.pretrain.hubert import HuBERTObjective, load_labels, mix_chunks
from speechrep.pretrain.kmeans import ClusterLabels
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# (count, width, generator) -> (count, width) float noise; a CPU generator, None: torch's global RNG
NoiseSource = Callable[[int, int, "torch.Generator | None"], Tensor]


@dataclass
class Config(hubert.Config):
    """WavLM Base: HuBERT Base's masked prediction and optimisation (every `hubert.Config` field, same
    defaults), on the WavLM architecture, with utterance mixing at p = 0.2 and noise chunks."""

    upstream: str = "wavlm_base"
    mix_prob: float = 0.2  # share of training utterances that get a chunk of speech or noise mixed in
    noise_prob: float = 0.5  # share of the mixed utterances whose chunk is noise rather than speech
    noise: str = ""  # lhotse CutSet manifest of noise recordings; empty: synthetic coloured noise
    noise_exponents: tuple[float, float] = (0.0, 2.0)  # synthetic noise: 1/f^e, e uniform (white .. brown)


def synthetic_noise(exponents: tuple[float, float] = (0.0, 2.0)) -> NoiseSource:
    """Rows of unit-power 1/f^e noise (`augment.coloured_noise`), e uniform in `exponents`; torch seeds."""

    def draw(count: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()
        rows = []
        for seed in seeds:  # one FFT per noisy utterance, not per sample
            rng = np.random.default_rng(seed)
            rows.append(torch.from_numpy(coloured_noise(rng, width, rng.uniform(*exponents))))
        return torch.stack(rows) if rows else torch.zeros(0, width)

    return draw


class NoiseManifest:
    """Noise recordings of a lhotse manifest; each call reads a random stretch of a random one per row."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.cuts: list[Cut] = list(load_cuts(self.path))
        if not self.cuts:
            raise ConfigError(f"key 'noise': {self.path} holds no noise recording")

    def __call__(self, count: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """(count, width) noise: random stretches (tiled if a recording is shorter) of random recordings."""
        picks = torch.randint(0, len(self.cuts), (count,), generator=generator).tolist()
        offsets = torch.rand(count, generator=generator).tolist()
        rows = [self._stretch(self.cuts[i], width, u) for i, u in zip(picks, offsets)]
        return torch.stack(rows) if rows else torch.zeros(0, width)

    def _stretch(self, cut: Cut, width: int, position: float) -> Tensor:
        seconds = width / SAMPLE_RATE
        if cut.duration > seconds:  # read only the stretch needed
            cut = cut.truncate(offset=position * (cut.duration - seconds), duration=seconds)
        if cut.sampling_rate != SAMPLE_RATE:
            cut = cut.resample(SAMPLE_RATE)
        try:
            audio = torch.from_numpy(np.asarray(cut.load_audio(), dtype=np.float32)[0])
        except Exception as e:  # lhotse and the audio backends raise many types
            raise SpeechrepError(f"{self.path}: noise cut {cut.id!r}: load_audio() failed ({e})") from e
        if audio.numel() == 0:
            raise SpeechrepError(f"{self.path}: noise cut {cut.id!r} is empty")
        return audio.repeat(-(-width // audio.numel()))[:width]


def denoising_mix(
    wavs: Tensor,
    wav_lens: Tensor,
    prob: float,
    noise_prob: float,
    noise: NoiseSource,
    max_ratio: float = 0.5,
    energy_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """WavLM's utterance mixing: to a `prob` share of the rows of `wavs` (B, T), add a chunk of another row
    or, with probability `noise_prob` (always, for a batch of one), of `noise`; the chunk is shorter than
    `max_ratio` of the primary utterance and primary/chunk energy is uniform in `energy_db` (dB)."""
    batch, width = wavs.shape
    if prob <= 0:
        return wavs
    dev = wavs.device
    lens = wav_lens.to(dev)
    draw = torch.rand(batch, generator=generator, device=dev)
    source = (torch.arange(batch, device=dev) + 1 + (draw * (batch - 1)).long()) % batch  # never itself
    use_noise = torch.rand(batch, generator=generator, device=dev) < noise_prob
    if batch < 2:
        use_noise = torch.ones_like(use_noise)
    others, other_lens = wavs[source], lens[source]
    rows = torch.nonzero(use_noise).flatten()
    if len(rows):
        others = others.clone()
        others[rows] = noise(len(rows), width, generator).to(device=dev, dtype=wavs.dtype)
        other_lens = torch.where(use_noise, torch.full_like(other_lens, width), other_lens)
    return mix_chunks(wavs, lens, others, other_lens, prob, max_ratio, energy_db, generator)


class WavLMObjective(nn.Module):
    """HuBERT's masked cluster prediction (`HuBERTObjective`, owning the upstream and the head) on input
    corrupted by `denoising_mix` in training; forward gives the loss."""

    def __init__(self, upstream: nn.Module, labels: ClusterLabels, cfg: Config, noise: NoiseSource):
        super().__init__()
        self.cfg, self.noise = cfg, noise
        self.masked = HuBERTObjective(upstream, labels, masked_prediction_config(cfg))

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Masked prediction loss of the (in training, mixed) batch against its clean labels, and scalars."""
        cfg, wavs = self.cfg, batch.wavs
        if self.training and cfg.mix_prob > 0:
            wavs = denoising_mix(wavs, batch.wav_lens, cfg.mix_prob, cfg.noise_prob, self.noise,
                                 cfg.mix_max_ratio, cfg.mix_energy_db)
        loss, scalars = self.masked.predict(batch, wavs)
        if self.training:
            scalars["mixed_share"] = float((wavs != batch.wavs).any(1).float().mean())
        return loss, scalars


def masked_prediction_config(cfg: Config) -> hubert.Config:
    """HuBERT's config with this run's masking, head and loss settings (and no mixing of its own)."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(hubert.Config)}
    return hubert.Config(**{**shared, "mix_prob": 0.0})


def noise_source(cfg: Config) -> NoiseSource:
    """The noise manifest `cfg.noise`, or synthetic coloured noise when it is empty."""
    return NoiseManifest(cfg.noise) if cfg.noise else synthetic_noise(tuple(cfg.noise_exponents))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train WavLM on `data` against the k-means labels `cfg.labels`; returns the exported upstream."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    labels = load_labels(cfg, upstream, "wavlm")
    noise = noise_source(cfg)
    log.info("wavlm: mixing %.0f %% of utterances (noise share %.0f %%, %s)", 100 * cfg.mix_prob,
             100 * cfg.noise_prob, cfg.noise or "synthetic coloured noise")
    objective = WavLMObjective(upstream, labels, cfg, noise)
    return run_pretraining("wavlm", objective, upstream, cfg, data, run_dir)

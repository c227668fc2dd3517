"""Masked acoustic modelling: Mockingjay (Liu et al. 2020, https://arxiv.org/abs/1910.12638).

The transformer encoder reads altered log-mel frames and a spectrogram head reconstructs the original ones;
the L1 loss counts only the altered positions. This module holds the objective shared by the family, which
differ only in the encoder and the alterations (`Alteration`):

- Mockingjay: frames stacked ×3, time alteration only;
- TERA (`speechrep.pretrain.tera`): time + frequency + magnitude alteration on unstacked frames;
- Audio ALBERT (`speechrep.pretrain.audio_albert`): Mockingjay's objective, one layer shared by all layers.

Time alteration picks spans covering about `time_prob` of each utterance's frames (`compute_span_mask`); per
utterance, as in the reference implementation, the chosen frames are zeroed (80 %), replaced by another
segment of the same utterance (10 %) or kept (10 %), and all of them are reconstructed. Frequency alteration
zeroes one band of up to `freq_fraction` of the channels per utterance, reconstructed on every frame;
magnitude alteration adds Gaussian noise to a whole batch with probability `noise_prob`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.errors import ConfigError
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.mockingjay import SpecHead


@dataclass
class Alteration:
    """How the input is altered before the encoder reads it (Mockingjay's defaults: time alteration only)."""

    time_prob: float = 0.15       # share of frames chosen for reconstruction, in spans
    time_span: int = 7            # frames per span (of the encoder's input, i.e. stacked frames)
    random_share: float = 0.1     # utterances whose chosen frames are replaced by another segment
    keep_share: float = 0.1       # utterances whose chosen frames are left as they are (zeroed: the rest)
    freq_fraction: float = 0.0    # widest zeroed channel band, as a share of the channels (TERA: 0.2)
    noise_prob: float = 0.0       # chance that a batch gets Gaussian noise on every frame (TERA)
    noise_std: float = 0.2

    def __post_init__(self) -> None:
        for name in ("time_prob", "random_share", "keep_share", "freq_fraction", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"key 'alteration.{name}': must be in [0, 1], got {getattr(self, name)}")
        if self.random_share + self.keep_share > 1.0:
            raise ConfigError("keys 'alteration.random_share' + 'alteration.keep_share' must not exceed 1, "
                              f"got {self.random_share} + {self.keep_share}")
        if self.time_span < 1:
            raise ConfigError(f"key 'alteration.time_span': must be >= 1, got {self.time_span}")
        if self.noise_std < 0:
            raise ConfigError(f"key 'alteration.noise_std': must be >= 0, got {self.noise_std}")


def alter_features(feats: Tensor, lengths: Tensor, alteration: Alteration) -> tuple[Tensor, Tensor]:
    """Altered features (B, T, D) and the (B, T, D) bool mask of the positions to reconstruct.

    Uses the global torch RNG, so a seeded run (and a resumed one) alters the same way. Padding stays zero and
    is never a target.
    """
    a = alteration
    B, T, D = feats.shape
    dev = feats.device
    valid = padding_mask(lengths, T)
    chosen = compute_span_mask(lengths, T, a.time_prob, a.time_span)
    dice = torch.rand(B, 1, device=dev)
    zeroed = chosen & (dice < 1.0 - a.random_share - a.keep_share)
    replaced = chosen & (dice >= 1.0 - a.random_share - a.keep_share) & (dice < 1.0 - a.keep_share)
    # "another segment": the utterance read from a random offset (cyclically), so spans stay contiguous
    length = lengths.clamp(min=1)
    offset = 1 + (torch.rand(B, device=dev) * (length - 1).clamp(min=1)).long()
    source = (torch.arange(T, device=dev)[None] + offset[:, None]) % length[:, None]
    shifted = feats.gather(1, source[..., None].expand(B, T, D))
    altered = torch.where(replaced[..., None], shifted, feats).masked_fill(zeroed[..., None], 0.0)
    targets = chosen[..., None].expand(B, T, D)
    widest = int(a.freq_fraction * D)
    if widest > 0:
        width = torch.randint(0, widest + 1, (B, 1), device=dev)
        start = (torch.rand(B, 1, device=dev) * (D - width + 1)).long()
        channels = torch.arange(D, device=dev)[None]
        band = ((channels >= start) & (channels < start + width))[:, None, :]  # (B, 1, D)
        altered = altered.masked_fill(band, 0.0)
        targets = targets | band
    if a.noise_prob > 0 and float(torch.rand(())) < a.noise_prob:
        altered = altered + torch.randn_like(altered) * a.noise_std
    keep = valid[..., None]
    return altered * keep, targets & keep


def masked_l1(pred: Tensor, target: Tensor, positions: Tensor) -> Tensor:
    """Mean absolute error over the True entries of `positions` (0 when there are none)."""
    weight = positions.to(pred.dtype)
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp(min=1)


class MaskedReconstruction(nn.Module):
    """A Mockingjay-family encoder plus its spectrogram head; forward: the L1 loss on altered positions."""

    def __init__(self, upstream: nn.Module, alteration: Alteration):
        super().__init__()
        self.upstream = upstream
        self.head = SpecHead(upstream.config)
        self.alteration = alteration

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        altered, targets = alter_features(feats, lengths, self.alteration)
        out = self.upstream.forward_features(altered, lengths)
        loss = masked_l1(self.head(out.hidden_states[-1]), feats, targets)
        altered_share = targets.sum() / (lengths.sum() * feats.shape[-1]).clamp(min=1)
        return loss, {"altered_share": float(altered_share)}


@dataclass
class Config:
    """Mockingjay pre-training: 12 layers × 768 on log-mel stacked ×3, 15 % of frames in spans, AdamW."""

    upstream: str = "mockingjay"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 3}
    alteration: Alteration = field(default_factory=lambda: Alteration(time_span=3))
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=20.0))
    stats_seconds: float = 3600.0  # audio read for the log-mel statistics of a `corpus_norm` encoder
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=500_000, lr=2e-4, warmup_steps=35_000, grad_accum=4, clip_norm=5.0, eval_every=10_000,
        log_every=100))


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train Mockingjay on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("mockingjay", MaskedReconstruction(upstream, cfg.alteration), upstream, cfg, data,
                           run_dir)

"""Vocoders from frame features: a Vocos-style neural vocoder, and a mel regressor followed by Griffin-Lim.

`vocos` (Siuzdak 2023): the features (log-mel or one hidden state of an upstream, standardised with
train-split statistics) go through a 1-D convolution and ConvNeXt blocks that stay at the frame rate; a linear
head predicts the log-magnitude and phase of an STFT whose hop is the features' hop (n_fft = 4·hop), and the
inverse STFT gives the wave. Trained with multi-resolution STFT and log-mel L1 losses, optionally with a
multi-resolution spectrogram discriminator (hinge loss).

`mel_gl`: the same ConvNeXt trunk regresses the shared log-mel (10 ms frames; hop/160 of them per feature
frame), trained with L1; Griffin-Lim turns it into a wave. From log-mel itself no training is needed
(`griffin_lim_from_log_mel`).

One optimizer trains generator and discriminator together, so the shared loop (`speechrep.train`) runs it
with its checkpoints and exact resume: the discriminator's loss sees the generated wave detached, and the
generator's adversarial loss sees the discriminator through detached copies of its weights, so each part
gets only its own gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from speechrep.audio import synthesis as spectral
from speechrep.errors import ConfigError
from speechrep.train import TrainConfig


@dataclass
class VocoderConfig:
    """A vocoder, the data it learns from and how long it trains."""

    kind: Literal["vocos", "mel_gl"] = "vocos"
    features: str = "logmel"  # `logmel` or UPSTREAM:LAYER (hub name or exported folder, hidden-state index)
    prematched: bool = False  # train on kNN-VC averages over the speaker's other utterances (k = prematch_k)
    prematch_k: int = 4
    subset: str = "unlabeled"  # CORPUS/<subset>/{train,dev}.jsonl.gz
    max_train_utterances: int | None = None  # the first N of the train split (None: all)
    dev_utterances: int = 8  # dev utterances scored at each evaluation
    segment_seconds: float = 0.8  # random crop per training example
    batch_size: int = 8
    dim: int = 192
    intermediate: int = 576
    num_blocks: int = 6
    discriminator: bool = False
    adversarial_weight: float = 0.1
    mel_weight: float = 1.0
    griffin_lim_iterations: int = 32
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=4000, lr=5e-4, schedule="cosine", warmup_steps=100, eval_every=500, log_every=50,
        metric="mel_l1", clip_norm=10.0))

    def __post_init__(self) -> None:
        if self.segment_seconds <= 0 or self.batch_size < 1 or self.num_blocks < 1 or self.prematch_k < 1:
            raise ConfigError("vocoder: segment_seconds, batch_size, num_blocks and prematch_k must be "
                              "positive")


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (kernel 7) → LayerNorm → pointwise MLP (GELU) → layer scale, with a residual."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, intermediate)
        self.down = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # (B, dim, T)
        y = self.dwconv(x).transpose(1, 2)
        y = self.down(F.gelu(self.up(self.norm(y)))) * self.gamma
        return x + y.transpose(1, 2)


class ConvNeXtTrunk(nn.Module):
    """Features (B, T, in) → (B, T, dim) through an input conv and ConvNeXt blocks at the frame rate."""

    def __init__(self, in_size: int, dim: int, intermediate: int, num_blocks: int):
        super().__init__()
        self.embed = nn.Conv1d(in_size, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate, 1.0 / num_blocks)
                                    for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.embed(x.transpose(1, 2)).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x.transpose(1, 2))


class ISTFTHead(nn.Module):
    """(B, T, dim) → wave (B, (T − 1)·hop): log-magnitude and phase of each STFT bin, inverse STFT."""

    def __init__(self, dim: int, hop: int):
        super().__init__()
        self.hop, self.n_fft = hop, 4 * hop
        self.out = nn.Linear(dim, self.n_fft + 2)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        log_mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = log_mag.clamp(max=10.0).exp()  # bounded: an early large log-magnitude must not overflow
        spec = torch.polar(mag, phase)
        length = (x.shape[1] - 1) * self.hop
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, self.window, center=True, length=length)


class SpectrogramDiscriminator(nn.Module):
    """Per STFT resolution, a small 2-D conv net on the log magnitude: one logit map per resolution."""

    def __init__(self, resolutions: tuple[tuple[int, int], ...] = spectral.STFT_RESOLUTIONS,
                 channels: int = 16):
        super().__init__()
        self.resolutions = resolutions

        def net() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(1, channels, (3, 9), padding=(1, 4)), nn.LeakyReLU(0.1),
                nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)), nn.LeakyReLU(0.1),
                nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)), nn.LeakyReLU(0.1),
                nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

        self.nets = nn.ModuleList(net() for _ in resolutions)

    def forward(self, wavs: Tensor) -> list[Tensor]:
        maps = []
        for (n_fft, hop), net in zip(self.resolutions, self.nets):
            mag = spectral.magnitude(wavs, n_fft, hop, None).clamp(min=1e-5).log()
            maps.append(net(mag.transpose(1, 2)[:, None]))  # (B, 1, frames, bins)
        return maps


class Vocoder(nn.Module):
    """Standardised features (B, T, in) → a wave (vocos) or the shared log-mel (mel_gl)."""

    def __init__(self, cfg: VocoderConfig, in_size: int, hop: int):
        super().__init__()
        if hop % spectral.HOP:
            raise ConfigError(f"vocoder: feature hop {hop} is not a multiple of the log-mel hop "
                              f"{spectral.HOP}")
        self.kind, self.hop, self.mels_per_frame = cfg.kind, hop, hop // spectral.HOP
        self.register_buffer("mean", torch.zeros(in_size))
        self.register_buffer("std", torch.ones(in_size))
        self.trunk = ConvNeXtTrunk(in_size, cfg.dim, cfg.intermediate, cfg.num_blocks)
        if cfg.kind == "vocos":
            self.head: nn.Module = ISTFTHead(cfg.dim, hop)
        else:
            self.head = nn.Linear(cfg.dim, self.mels_per_frame * spectral.NUM_MELS)
        self.discriminator = SpectrogramDiscriminator() if cfg.discriminator and cfg.kind == "vocos" else None
        self.iterations = cfg.griffin_lim_iterations

    def forward(self, features: Tensor) -> Tensor:
        """vocos: waves (B, (T − 1)·hop); mel_gl: log-mels (B, T·hop/160, 80)."""
        x = self.trunk((features - self.mean) / self.std)
        out = self.head(x)
        if self.kind == "mel_gl":
            out = out.reshape(out.shape[0], -1, spectral.NUM_MELS)
        return out

    @torch.inference_mode()
    def synthesize(self, features: Tensor) -> Tensor:
        """A wave (T·hop,) from one utterance's frames (T, in)."""
        length = len(features) * self.hop
        padded = torch.cat([features, features[-1:]])  # one frame more: the wave covers every input frame
        out = self(padded[None].float())[0]
        if self.kind == "vocos":
            return out[:length]
        return spectral.griffin_lim_from_log_mel(out, self.iterations, length=length)


def hinge_losses(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Discriminator hinge loss: mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def vocoder_loss(model: Vocoder, features: Tensor, wavs: Tensor, cfg: VocoderConfig) -> tuple[Tensor, dict]:
    """Training loss of a batch of feature crops (B, T, in) and their wave crops (B, (T − 1)·hop)."""
    out = model(features)
    if model.kind == "mel_gl":
        target = spectral.log_mel(wavs)
        loss = F.l1_loss(out[:, :target.shape[1]], target)
        return loss, {"mel_l1": float(loss.detach())}
    stft = spectral.multi_resolution_stft_loss(out, wavs)
    mel = spectral.mel_l1_loss(out, wavs)
    loss = stft + cfg.mel_weight * mel
    scalars = {"stft": float(stft.detach()), "mel_l1": float(mel.detach())}
    if model.discriminator is not None:
        frozen = {name: p.detach() for name, p in model.discriminator.named_parameters()}
        fake_for_generator = functional_call(model.discriminator, frozen, (out,))
        adversarial = sum(F.relu(1 - f).mean() for f in fake_for_generator) / len(fake_for_generator)
        disc = hinge_losses(model.discriminator(wavs), model.discriminator(out.detach()))
        loss = loss + cfg.adversarial_weight * adversarial + disc
        scalars.update(adversarial=float(adversarial.detach()), discriminator=float(disc.detach()))
    return loss, scalars

"""BEST-RQ pre-training (Chiu et al. 2022, https://arxiv.org/abs/2202.01855): masked prediction of the codes a
frozen random-projection quantizer gives the input.

Targets: the standardised, stacked log-mel frame (the encoder's own input, 4 × 80 dims per 40 ms) is
multiplied by a frozen Xavier-initialised projection to 16 dims and assigned to the nearest of 8192 frozen
standard-normal codebook vectors, both sides l2-normalised (cosine). Masking: spans of 400 ms (10 frames)
starting at 1 % of the frames, the masked input frames replaced by N(0, 0.1²) noise. Loss: cross-entropy of
a softmax layer over the codebook on masked frames (one head per codebook when `num_codebooks` > 1). The
projection and codebook are seeded buffers, saved with the run's checkpoints and never trained. Collapse
monitor: the perplexity of the target codes in each batch (`target_perplexity`), with a warning when it
falls below `min_perplexity`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, load_encoder, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask

log = logging.getLogger(__name__)


@dataclass
class Config:
    """BEST-RQ settings: 8192 × 16 codebook, 1 % span starts × 400 ms, noise 0.1; Adam, 25k warm-up."""

    upstream: str = "best_rq_base"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config
    codebook_size: int = 8192
    codebook_dim: int = 16
    num_codebooks: int = 1
    mask_start_prob: float = 0.01  # share of frames that start a masked span
    mask_span: int = 10  # frames per span (400 ms at 40 ms per frame)
    mask_noise_std: float = 0.1  # masked input frames become N(0, std²) noise
    quantizer_seed: int = 0  # seeds the frozen projection and codebook
    min_perplexity: float = 2.0  # below this the targets have collapsed: warn
    stats_seconds: float = 3600.0  # audio read to estimate the filterbank mean and std
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=320.0, max_utterance=15.0))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=400_000,
            lr=2e-3,
            betas=(0.9, 0.98),
            warmup_steps=25_000,
            schedule="cosine",
            clip_norm=5.0,
            eval_every=5000,
            log_every=200,
        )
    )


class RandomProjectionQuantizer(nn.Module):
    """Frozen random projection + random codebook(s): (B, T, D) features → (B, T, num_codebooks) code ids."""

    def __init__(
        self, input_dim: int, codebook_size: int, codebook_dim: int, num_codebooks: int = 1, seed: int = 0
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        bound = (6.0 / (input_dim + codebook_dim)) ** 0.5  # Xavier uniform, drawn from our own generator
        projection = (torch.rand(num_codebooks, input_dim, codebook_dim, generator=gen) * 2 - 1) * bound
        codebook = torch.randn(num_codebooks, codebook_size, codebook_dim, generator=gen)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", F.normalize(codebook, dim=-1))

    @torch.no_grad()
    def forward(self, feats: Tensor) -> Tensor:
        """Nearest codebook entry of each l2-normalised projected frame (max cosine similarity)."""
        projected = F.normalize(torch.einsum("btd,gde->btge", feats.float(), self.projection), dim=-1)
        return torch.einsum("btge,gve->btgv", projected, self.codebook).argmax(-1)


def code_perplexity(codes: Tensor, size: int) -> Tensor:
    """exp(entropy) of the code histogram of `codes` (N,), averaged over codebooks when (N, G)."""
    codes = codes.reshape(codes.shape[0], -1)
    counts = torch.stack([torch.bincount(codes[:, g], minlength=size) for g in range(codes.shape[1])]).float()
    probs = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    return torch.exp(-(probs * probs.clamp(min=1e-12).log()).sum(-1)).mean()


class BestRQObjective(nn.Module):
    """The BEST-RQ encoder, its frozen quantizer and the softmax head(s); forward gives the masked CE loss."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        c = upstream.config
        self.quantizer = RandomProjectionQuantizer(
            c.num_mel_bins * c.stack_frames,
            cfg.codebook_size,
            cfg.codebook_dim,
            cfg.num_codebooks,
            cfg.quantizer_seed,
        )
        self.head = nn.Linear(c.hidden_size, cfg.num_codebooks * cfg.codebook_size)
        self._warned = False

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Masked code prediction loss, masked accuracy and the target perplexity."""
        cfg = self.cfg
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        targets = self.quantizer(feats)  # (B, T, G), from the unmasked input
        mask = compute_span_mask(
            lengths, feats.shape[1], cfg.mask_start_prob * cfg.mask_span, cfg.mask_span, min_spans=1
        )
        noise = torch.randn_like(feats) * cfg.mask_noise_std
        _, final = self.upstream.encode(torch.where(mask[..., None], noise, feats), lengths)
        logits = self.head(final[mask]).float().unflatten(-1, (cfg.num_codebooks, cfg.codebook_size))
        gold = targets[mask]
        loss = F.cross_entropy(logits.flatten(0, 1), gold.flatten())
        valid = padding_mask(lengths, feats.shape[1])
        perplexity = float(code_perplexity(targets[valid], cfg.codebook_size))
        if perplexity < cfg.min_perplexity and not self._warned:
            log.warning(
                "best_rq: target code perplexity %.2f < %.2f: the random-projection targets collapsed "
                "(silent or constant input?)",
                perplexity,
                cfg.min_perplexity,
            )
            self._warned = True
        return loss, {
            "masked_acc": float((logits.argmax(-1) == gold).float().mean()),
            "mask_share": float(mask[valid].float().mean()),
            "target_perplexity": perplexity,
        }


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train a BEST-RQ encoder on `data`; returns the exported upstream directory."""
    upstream = load_encoder(cfg, data)
    return run_pretraining("best_rq", BestRQObjective(upstream, cfg), upstream, cfg, data, run_dir)

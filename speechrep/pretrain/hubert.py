"""HuBERT pre-training (Hsu et al. 2021, https://arxiv.org/abs/2106.07447): predict k-means labels of masked
frames.

The iteration pipeline, each step its own command:

    speechrep kmeans --features mfcc --data CORPUS --k 100 --out L1             # MFCC(+Δ+ΔΔ) targets
    speechrep pretrain --method hubert --data CORPUS --out RUN1 labels=L1       # iteration 1
    speechrep kmeans --features RUN1/upstream:6 --data CORPUS --k 500 --out L2  # a layer of RUN1
    speechrep pretrain --method hubert --data CORPUS --out RUN2 labels=L2       # iteration 2

On CPU, `--preset small` runs both iterations on the `small` synthetic corpus in minutes; the README gives
the measured label quality of each iteration.

Objective: span masking (p = 8 % of frames start a span of 10), the masked frames replaced by the learned mask
embedding; the final layer is projected to `final_dim` and scored against one embedding per cluster by cosine
similarity / 0.1; cross-entropy on masked frames (unmasked frames with `unmasked_weight`), plus the squared
CNN-feature penalty (weight 10). Masked and unmasked accuracies are logged. Optionally WavLM-style utterance
mixing (Chen et al. 2022, https://arxiv.org/abs/2110.13900): a chunk (≤ half the length) of another
utterance of the batch is added at a random energy ratio while the targets stay those of the primary one.
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
from speechrep.errors import ConfigError
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.pretrain.kmeans import IGNORE, ClusterLabels
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """HuBERT Base settings (fairseq `hubert_base_librispeech`): 400k steps, peak LR 5e-4, 8 % warm-up."""

    upstream: str = "hubert_base"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 4}
    labels: str = ""  # directory written by `speechrep kmeans` (required)
    mask_start_prob: float = 0.08  # share of frames that start a masked span (the paper's p)
    mask_span: int = 10  # frames per span (the paper's l)
    final_dim: int = 256  # projection of the last layer and size of the cluster embeddings
    temperature: float = 0.1  # cosine-similarity logits / temperature
    unmasked_weight: float = 0.0  # weight of the loss on unmasked frames (the paper: 0)
    feature_penalty: float = 10.0  # weight of the mean squared CNN feature
    feature_grad_mult: float = 0.1  # scales the gradient reaching the CNN (fairseq's feature_grad_mult)
    mix_prob: float = 0.0  # WavLM utterance mixing: share of utterances that get a chunk mixed in
    mix_max_ratio: float = 0.5  # the chunk is at most this share of the primary utterance
    mix_energy_db: tuple[float, float] = (-5.0, 5.0)  # energy of primary over chunk, dB, uniform
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=87.5, max_utterance=15.0, min_utterance=2.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=400_000,
            lr=5e-4,
            betas=(0.9, 0.98),
            weight_decay=0.01,
            warmup_steps=32_000,
            schedule="linear",
            clip_norm=10.0,
            grad_accum=1,
            eval_every=5000,
            log_every=200,
        )
    )


def mix_utterances(
    wavs: Tensor,
    wav_lens: Tensor,
    prob: float,
    max_ratio: float = 0.5,
    energy_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """WavLM utterance mixing: add to a `prob` share of utterances a chunk of another one of the batch.

    The chunk length is uniform in (0, max_ratio · min(both lengths)], its positions uniform in both
    utterances, and it is scaled so that primary energy / chunk energy is uniform in `energy_db` (dB)."""
    batch = wavs.shape[0]
    if batch < 2 or prob <= 0:
        return wavs
    dev = wavs.device
    lens = wav_lens.to(dev)
    draw = torch.rand(batch, generator=generator, device=dev)
    source = (torch.arange(batch, device=dev) + 1 + (draw * (batch - 1)).long()) % batch  # never itself
    return mix_chunks(wavs, lens, wavs[source], lens[source], prob, max_ratio, energy_db, generator)


def mix_chunks(
    wavs: Tensor,
    wav_lens: Tensor,
    others: Tensor,
    other_lens: Tensor,
    prob: float,
    max_ratio: float = 0.5,
    energy_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add to a `prob` share of the rows of `wavs` (B, T) a chunk of the same row of `others` (B, T), as
    `mix_utterances` describes (the secondary signals given: other utterances, or noise)."""
    batch, width = wavs.shape
    dev = wavs.device
    rand = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
    lens, other_lens = wav_lens.to(dev), other_lens.to(dev)
    chunk = (rand(batch) * max_ratio * torch.minimum(lens, other_lens).float()).long().clamp(min=1)
    chunk = torch.where(rand(batch) < prob, chunk, torch.zeros_like(chunk))
    at = (rand(batch) * (lens - chunk + 1).float()).long()  # where it lands in the primary
    src_at = (rand(batch) * (other_lens - chunk + 1).float()).long()  # where it is taken from
    pos = torch.arange(width, device=dev)[None, :]
    inside = (pos >= at[:, None]) & (pos < (at + chunk)[:, None])
    src_index = (pos - at[:, None] + src_at[:, None]).clamp(0, others.shape[1] - 1)
    piece = torch.gather(others, 1, src_index) * inside
    valid = padding_mask(lens, width).to(wavs.dtype)
    primary_power = (wavs.square() * valid).sum(1) / lens.clamp(min=1)
    piece_power = piece.square().sum(1) / chunk.clamp(min=1)
    ratio_db = energy_db[0] + rand(batch) * (energy_db[1] - energy_db[0])
    scale = torch.sqrt(primary_power / (piece_power.clamp(min=1e-10) * 10 ** (ratio_db / 10)))
    return wavs + piece * scale[:, None]


def cluster_logits(projected: Tensor, label_embeddings: Tensor, temperature: float) -> Tensor:
    """Cosine similarity of each projected frame (N, D) with every cluster embedding (K, D), / temperature."""
    return (
        F.normalize(projected.float(), dim=-1) @ F.normalize(label_embeddings.float(), dim=-1).T / temperature
    )


class HuBERTObjective(nn.Module):
    """The HuBERT upstream plus its pre-training head (projection + cluster embeddings); forward: the loss."""

    def __init__(self, upstream: nn.Module, labels: ClusterLabels, cfg: Config):
        super().__init__()
        self.upstream, self.labels, self.cfg = upstream, labels, cfg
        self.final_proj = nn.Linear(upstream.config.hidden_size, cfg.final_dim)
        self.label_embeddings = nn.Parameter(torch.empty(labels.k, cfg.final_dim).uniform_())

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Masked cluster prediction loss and scalars (accuracies, mask share, feature penalty)."""
        cfg, wavs = self.cfg, batch.wavs
        if self.training and cfg.mix_prob > 0:
            wavs = mix_utterances(wavs, batch.wav_lens, cfg.mix_prob, cfg.mix_max_ratio, cfg.mix_energy_db)
        return self.predict(batch, wavs)

    def predict(self, batch: AudioBatch, wavs: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The loss of `forward` on `wavs` (the batch's audio or a corrupted copy) against its labels."""
        cfg, up = self.cfg, self.upstream
        conv, lengths = up.conv_features(wavs, batch.wav_lens)
        if cfg.feature_grad_mult != 1.0:  # same values, a scaled gradient: stabilises the CNN (fairseq)
            conv = conv * cfg.feature_grad_mult + conv.detach() * (1.0 - cfg.feature_grad_mult)
        valid = padding_mask(lengths, conv.shape[1])
        penalty = (conv.float().square().mean(-1) * valid).sum() / valid.sum()
        feats = up.feature_projection(conv)
        targets = self.labels.targets(batch.cuts, lengths, conv.shape[1])
        mask = compute_span_mask(
            lengths, conv.shape[1], cfg.mask_start_prob * cfg.mask_span, cfg.mask_span, min_spans=2
        )
        _, final = up.encode(feats, lengths, mask)
        labelled = targets != IGNORE
        loss = cfg.feature_penalty * penalty
        scalars: dict[str, float] = {
            "feature_penalty": float(penalty.detach()),
            "mask_share": float(mask[valid].float().mean()),
        }
        for name, where, weight in (
            ("masked", mask & labelled, 1.0),
            ("unmasked", ~mask & labelled, cfg.unmasked_weight),
        ):
            if not bool(where.any()):
                continue
            logits = cluster_logits(self.final_proj(final[where]), self.label_embeddings, cfg.temperature)
            gold = targets[where]
            part = F.cross_entropy(logits, gold)
            if weight > 0:
                loss = loss + weight * part
            scalars[f"{name}_loss"] = float(part.detach())
            scalars[f"{name}_acc"] = float((logits.argmax(-1) == gold).float().mean())
        return loss, scalars


def load_labels(cfg: Any, upstream: nn.Module, method: str) -> ClusterLabels:
    """The k-means labels named by `cfg.labels`, checked against the upstream's frame rate."""
    if not cfg.labels:
        raise ConfigError(
            f"key 'labels': {method} needs k-means labels: run `speechrep kmeans ... --out DIR`, "
            "then pass labels=DIR"
        )
    labels = ClusterLabels(cfg.labels)
    labels.check_stride(int(upstream.stride), cfg.upstream)
    log.info(
        "%s: %d clusters from %s (%s, %d used)",
        method,
        labels.k,
        cfg.labels,
        labels.meta.get("describe"),
        labels.meta.get("used_clusters", -1),
    )
    return labels


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train HuBERT on `data` against the k-means labels `cfg.labels`; returns the exported upstream."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    labels = load_labels(cfg, upstream, "hubert")
    return run_pretraining("hubert", HuBERTObjective(upstream, labels, cfg), upstream, cfg, data, run_dir)

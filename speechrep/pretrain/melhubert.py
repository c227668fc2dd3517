"""MelHuBERT pre-training (Lin et al. 2023, https://arxiv.org/abs/2211.09944): HuBERT's masked cluster
prediction on log-mel input, in two stages.

    speechrep kmeans --features fbank --data CORPUS --k 512 --out L1                         # stage 1 targets
    speechrep pretrain --method melhubert --data CORPUS --out RUN1 labels=L1
    speechrep kmeans --features RUN1/upstream:8 --data CORPUS --k 512 --out L2              # stage 2: layer 8
    speechrep pretrain --method melhubert --data CORPUS --out RUN2 labels=L2

Objective (the reference's): the standardised stacked log-mel frames of masked spans are set to zero before
the projection (no learned mask embedding), a linear layer maps the last hidden state to cluster logits, and
cross-entropy is taken on masked frames. The filterbank is standardised with statistics of the training data,
computed at the start of a run and stored in the model (so the export carries them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, run_pretraining, set_corpus_statistics
from speechrep.pretrain.hubert import load_labels
from speechrep.pretrain.kmeans import IGNORE, ClusterLabels
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """MelHuBERT (20 ms) settings: 512 clusters, 14 % span starts × 5 frames, Adam 1e-4, clip 10."""

    upstream: str = "melhubert_base"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config
    labels: str = ""  # directory written by `speechrep kmeans` (required)
    mask_start_prob: float = 0.14  # share of frames that start a masked span (fairseq mask_prob 0.7 / span 5)
    mask_span: int = 5
    unmasked_weight: float = 0.0  # weight of the cross-entropy on unmasked frames (the paper: 0)
    stats_seconds: float = 3600.0  # audio read to estimate the filterbank mean and std
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=480.0, max_utterance=15.0))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=200_000,
            lr=1e-4,
            warmup_steps=0,
            schedule="constant",
            clip_norm=10.0,
            eval_every=5000,
            log_every=200,
        )
    )


class MelHuBERTObjective(nn.Module):
    """The MelHuBERT upstream plus its linear cluster classifier; forward gives the masked prediction loss."""

    def __init__(self, upstream: nn.Module, labels: ClusterLabels, cfg: Config):
        super().__init__()
        self.upstream, self.labels, self.cfg = upstream, labels, cfg
        self.final_proj = nn.Linear(upstream.config.hidden_size, labels.k)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the clusters of masked frames (plus `unmasked_weight` × that of the unmasked
        ones), with the masked accuracy and the masked share."""
        cfg = self.cfg
        feats, lengths = self.upstream.input_features(batch.wavs, batch.wav_lens)
        targets = self.labels.targets(batch.cuts, lengths, feats.shape[1])
        mask = compute_span_mask(
            lengths, feats.shape[1], cfg.mask_start_prob * cfg.mask_span, cfg.mask_span, min_spans=2
        )
        _, final = self.upstream.encode(feats, lengths, mask)
        labelled = targets != IGNORE
        logits = self.final_proj(final[mask & labelled]).float()
        gold = targets[mask & labelled]
        loss = F.cross_entropy(logits, gold)
        valid = padding_mask(lengths, feats.shape[1])
        scalars = {
            "masked_acc": float((logits.argmax(-1) == gold).float().mean()),
            "mask_share": float(mask[valid].float().mean()),
        }
        unmasked = ~mask & labelled
        if cfg.unmasked_weight > 0 and bool(unmasked.any()):
            part = F.cross_entropy(self.final_proj(final[unmasked]).float(), targets[unmasked])
            loss = loss + cfg.unmasked_weight * part
            scalars["unmasked_loss"] = float(part.detach())
        return loss, scalars


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train MelHuBERT on `data` against the k-means labels `cfg.labels`; returns the export."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    labels = load_labels(cfg, upstream, "melhubert")  # bad labels fail before the statistics are read
    set_corpus_statistics(upstream, data, cfg)
    return run_pretraining(
        "melhubert", MelHuBERTObjective(upstream, labels, cfg), upstream, cfg, data, run_dir
    )

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

Sequence compression (Meng et al., SLT 2022; `model.downsample` k > 1, `model.segmentation`, see
`speechrep.upstream.melhubert`): spans of segments are masked (a span of max(1, round(mask_span / k))
segments, the same masked share), and the targets stay at the frame rate with the last layer upsampled onto
the frames (`target_rate: upsample`, the paper's (a)) or are subsampled to each segment's majority cluster
(`subsample`, (b)). Unit segmentation fits its codebook (`model.segment_units` centroids) on the training
audio's input frames first; alignment segmentation reads phone boundaries from the cuts, or `boundaries=FILE`.

    speechrep pretrain --method melhubert --data CORPUS --out RUN labels=L1 model.downsample=4 \
        model.segmentation=alignment target_rate=subsample

A robust teacher (the JSALT robustness study's continually trained teacher): with `distortions` (and their
ranges, `speechrep.pretrain.distortion`), each utterance is heard through one distortion drawn uniformly per
step while its k-means targets stay those of the clean audio. `upstream` may be an exported MelHuBERT, whose
weights and corpus statistics the run continues from (its cluster classifier starts afresh):

    speechrep pretrain --method melhubert --data CORPUS --out ROBUST labels=L1 upstream=RUN1/upstream \
        'distortions=[clean,noise,reverb,band_limit,clip]'

Speed perturbation changes the timeline of the frames against their labels and is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch, audio_batches
from speechrep.data.boundaries import BoundarySource
from speechrep.errors import ConfigError
from speechrep.nn.masking import compute_span_mask
from speechrep.nn.segments import expand_segments, segment_majority
from speechrep.pretrain.common import PretrainData, load_unlabeled, run_pretraining, set_corpus_statistics
from speechrep.pretrain.distortion import Distorter, DistortionConfig
from speechrep.pretrain.hubert import load_labels
from speechrep.pretrain.kmeans import IGNORE, ClusterLabels, fit_kmeans
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config(DistortionConfig):
    """MelHuBERT (20 ms) settings: 512 clusters, 14 % span starts × 5 frames, Adam 1e-4, clip 10; no
    distortion unless `distortions` names some (a robust teacher)."""

    upstream: str = "melhubert_base"  # a hub name, or an exported MelHuBERT to continue from
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config
    labels: str = ""  # directory written by `speechrep kmeans` (required)
    mask_start_prob: float = 0.14  # share of frames that start a masked span (fairseq mask_prob 0.7 / span 5)
    mask_span: int = 5
    unmasked_weight: float = 0.0  # weight of the cross-entropy on unmasked frames (the paper: 0)
    stats_seconds: float = 3600.0  # audio read to estimate the filterbank mean and std
    # sequence compression (model.downsample > 1 or model.segmentation units/alignment)
    target_rate: str = "upsample"  # upsample: last layer onto the frames; subsample: one target per segment
    boundaries: str = ""  # alignment segmentation: a boundaries file; empty: the cuts' phone alignments
    unit_fit_seconds: float = 600.0  # unit segmentation: audio whose input frames fit the codebook
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if "speed" in self.distortions:
            raise ConfigError("key 'distortions': speed changes the frames' timeline against their k-means "
                              "labels; use clean, noise, reverb, band_limit or clip")
        if self.target_rate not in ("upsample", "subsample"):
            raise ConfigError(f"key 'target_rate': {self.target_rate!r} is not 'upsample' or 'subsample'")


class MelHuBERTObjective(nn.Module):
    """The MelHuBERT upstream plus its linear cluster classifier; forward gives the masked prediction loss."""

    def __init__(self, upstream: nn.Module, labels: ClusterLabels, cfg: Config):
        super().__init__()
        self.upstream, self.labels, self.cfg = upstream, labels, cfg
        self.final_proj = nn.Linear(upstream.config.hidden_size, labels.k)
        self.boundaries = BoundarySource(cfg.boundaries) if upstream.needs_boundaries else None
        self.distorter = Distorter(cfg, upstream.sample_rate) if cfg.distortions else None

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the clusters of masked frames (plus `unmasked_weight` × that of the unmasked
        ones), with the masked accuracy and the masked share."""
        cfg, up = self.cfg, self.upstream
        wavs = batch.wavs
        if self.distorter is not None:
            # numpy draws seeded from torch's RNG, which the loop checkpoints: resumed runs redraw the same
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            kinds = [cfg.distortions[k] for k in rng.integers(len(cfg.distortions), size=len(wavs))]
            wavs = self.distorter.batch(wavs, batch.wav_lens, kinds, rng)[0]  # the same lengths
        feats, lengths = up.input_features(wavs, batch.wav_lens)
        targets = self.labels.targets(batch.cuts, lengths, feats.shape[1])
        if up.compressed:
            final, targets, mask, lengths = self.compressed(batch, feats, lengths, targets)
        else:
            mask = compute_span_mask(
                lengths, feats.shape[1], cfg.mask_start_prob * cfg.mask_span, cfg.mask_span, min_spans=2
            )
            _, final = up.encode(feats, lengths, mask)
        labelled = targets != IGNORE
        logits = self.final_proj(final[mask & labelled]).float()
        gold = targets[mask & labelled]
        loss = F.cross_entropy(logits, gold)
        valid = padding_mask(lengths, mask.shape[1])
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

    def compressed(
        self, batch: AudioBatch, feats: Tensor, lengths: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A compressed model's (last layer, targets, mask, lengths), at the frame rate or the segment rate
        (`target_rate`); spans of whole segments are masked."""
        cfg, up = self.cfg, self.upstream
        boundaries = self.boundaries.for_cuts(batch.cuts) if self.boundaries is not None else None
        ids, counts = up.segments(feats, lengths, boundaries)
        span = max(1, round(cfg.mask_span / up.config.downsample))
        segment_mask = compute_span_mask(
            counts, int(counts.max()), cfg.mask_start_prob * cfg.mask_span, span, min_spans=2
        )
        frame_mask = expand_segments(segment_mask[..., None].float(), ids)[..., 0] > 0
        _, final = up.encode(feats, lengths, frame_mask, segments=(ids, counts))
        if cfg.target_rate == "upsample":
            return expand_segments(final, ids), targets, frame_mask, lengths
        return final, segment_majority(targets, ids, counts, self.labels.k, IGNORE), segment_mask, counts


def fit_unit_codebook(upstream: nn.Module, data: Path, data_cfg: PretrainData, max_seconds: float,
                      seed: int = 0) -> None:
    """Fit the unit segmentation's codebook: k-means of the model's input frames (standardised, stacked
    log-mels) of up to `max_seconds` of training audio."""
    train_cuts, _ = load_unlabeled(data, data_cfg)
    frames, seconds = [], 0.0
    with torch.inference_mode():
        for batch in audio_batches(train_cuts, 60.0, shuffle=False)(0):
            feats, lengths = upstream.input_features(batch.wavs, batch.wav_lens)
            frames.append(feats[padding_mask(lengths, feats.shape[1])].float().numpy())
            seconds += float(batch.wav_lens.sum()) / 16000
            if seconds >= max_seconds:
                break
    k = upstream.config.segment_units
    model = fit_kmeans(np.concatenate(frames), k, seed=seed, n_init=3)
    upstream.unit_centroids.copy_(torch.from_numpy(model.cluster_centers_.astype(np.float32)))
    log.info("melhubert: unit codebook of %d centroids fitted on %.0f s of input frames", k, seconds)


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train MelHuBERT on `data` against the k-means labels `cfg.labels`; returns the export."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    labels = load_labels(cfg, upstream, "melhubert")  # bad labels fail before the statistics are read
    if not Path(cfg.upstream).is_dir():  # an exported MelHuBERT carries its statistics
        set_corpus_statistics(upstream, data, cfg)
    if upstream.config.segmentation == "units":
        fit_unit_codebook(upstream, data, cfg.data, cfg.unit_fit_seconds, cfg.train.seed)
    return run_pretraining(
        "melhubert", MelHuBERTObjective(upstream, labels, cfg), upstream, cfg, data, run_dir
    )

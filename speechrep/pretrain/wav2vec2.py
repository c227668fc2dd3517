"""wav2vec 2.0 pre-training (Baevski et al. 2020, https://arxiv.org/abs/2006.11477): contrastive prediction of
quantized CNN features at masked positions.

Objective (fairseq `wav2vec2_base_librispeech`, Hugging Face `Wav2Vec2ForPreTraining`):
- CNN features z (the feature penalty is the mean of z², weight 10; their gradient is scaled by 0.1), layer
  normalised; spans of 10 frames starting at p = 6.5 % of the frames (at least 2 spans) are replaced by the
  mask embedding before the Transformer.
- Targets: the layer-normalised features of the masked frames through a Gumbel product quantizer (G = 2 groups
  × V = 320 entries, straight-through hard Gumbel, temperature max(2 · 0.999995^step, 0.5)), then `project_q`.
- Prediction: the Transformer output of each masked frame through `final_proj`; logits are the cosine
  similarities with the true target and K = 100 distractors (targets of other masked frames of the same
  utterance, never the frame itself) / κ = 0.1; a distractor equal to the target gets −inf (as HF, fairseq).
- Loss = mean over masked frames of the cross-entropy of the true target + 0.1 · diversity (G·V − perplexity)
  / G·V + 10 · feature penalty. Hugging Face sums the contrastive and diversity terms over masked frames (and
  has no feature penalty); fairseq sums and divides the gradient by the number of masked frames: the same as
  our mean.
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
from speechrep.nn.quantizers import GumbelVectorQuantizer, QuantizerOutput
from speechrep.pretrain.apc import CodebookMonitor
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """wav2vec 2.0 Base (fairseq `wav2vec2_base_librispeech`): 400k steps, peak LR 5e-4, 8 % warm-up."""

    upstream: str = "wav2vec2_base"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 4}
    mask_start_prob: float = 0.065  # share of frames that start a masked span (the paper's p)
    mask_span: int = 10  # frames per span (the paper's M)
    min_spans: int = 2  # masked spans per utterance at least
    codebook_groups: int = 2  # G
    codebook_entries: int = 320  # V per group
    codebook_dim: int = 256  # size of a quantized vector (G slices of codebook_dim / G)
    final_dim: int = 256  # space of the contrastive task (project_q and final_proj)
    num_negatives: int = 100  # K distractors per masked frame
    logit_temperature: float = 0.1  # κ: cosine similarity / κ
    diversity_weight: float = 0.1  # α
    feature_penalty: float = 10.0  # weight of the mean squared CNN feature
    feature_grad_mult: float = 0.1  # scales the gradient reaching the CNN
    quantizer_dropout: float = 0.1  # dropout on the quantizer input (fairseq's dropout_features)
    gumbel_start: float = 2.0  # Gumbel temperature: max(start · decay^step, end)
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=87.5, max_utterance=15.625, min_utterance=2.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=400_000,
            lr=5e-4,
            betas=(0.9, 0.98),
            weight_decay=0.01,
            warmup_steps=32_000,
            schedule="linear",
            clip_norm=None,
            eval_every=5000,
            log_every=200,
        )
    )


def gumbel_temperature(step: int, start: float, end: float, decay: float) -> float:
    """The annealed Gumbel-softmax temperature after `step` optimizer updates."""
    return max(start * decay**step, end)


def sample_distractors(mask: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """(N, num) indices into the N masked frames (row-major order of `mask`), each from the same utterance.

    Uniform over the other masked frames of the utterance, never the frame itself; an utterance with a single
    masked frame can only point at itself (its logits are then dropped as equal to the positive)."""
    counts = mask.sum(1)  # masked frames per utterance
    offsets = counts.cumsum(0) - counts
    utterance = torch.repeat_interleave(torch.arange(mask.shape[0], device=mask.device), counts)
    own = torch.arange(len(utterance), device=mask.device) - offsets[utterance]  # rank within its utterance
    others = (counts[utterance] - 1).clamp(min=0)[:, None]
    noise = torch.rand(
        len(utterance),
        num,
        generator=generator,
        device=generator.device if generator is not None else mask.device,
    ).to(mask.device)
    # draw among the n - 1 others, then step over the frame itself: uniform and never the positive
    draw = torch.minimum((noise * others).long(), (others - 1).clamp(min=0))
    draw = draw + (draw >= own[:, None]).long()
    draw = torch.where(others > 0, draw, own[:, None])
    return offsets[utterance][:, None] + draw


def contrastive_logits(
    predicted: Tensor, targets: Tensor, distractors: Tensor, temperature: float, codes: Tensor | None = None
) -> Tensor:
    """(N, 1 + K) logits: cosine of each prediction with its target, then with its K distractor targets, / κ.

    A distractor identical to the target is set to −inf: it cannot be told apart. Identity is by `codes`
    (N, G) when given (straight-through vectors of one code can differ in the last bit), else by value."""
    pred = F.normalize(predicted.float(), dim=-1, eps=1e-8)
    unit = F.normalize(targets.float(), dim=-1, eps=1e-8)
    positive = (pred * unit).sum(-1, keepdim=True)
    negative = torch.einsum("nd,nkd->nk", pred, unit[distractors])
    ids = targets if codes is None else codes
    same = (ids[distractors] == ids[:, None]).all(-1)
    return torch.cat([positive, negative.masked_fill(same, float("-inf"))], dim=1) / temperature


@dataclass
class Wav2Vec2PretrainOutput:
    """The loss, its parts and what they were computed on."""

    loss: Tensor
    contrastive: Tensor  # mean cross-entropy over masked frames
    diversity: Tensor  # (G·V − perplexity) / G·V
    feature_penalty: Tensor  # mean squared CNN feature over valid frames
    vq: QuantizerOutput  # codes and codebook perplexity of the masked frames
    logits: Tensor  # (N, 1 + K), the true target first
    mask: Tensor  # (B, T') masked frames
    lengths: Tensor  # (B,) valid frames


class Wav2Vec2Objective(nn.Module):
    """A wav2vec 2.0 upstream plus its pre-training-only parts (quantizer, project_q, final_proj)."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        self.quantizer = GumbelVectorQuantizer(
            upstream.feature_encoder.out_channels,
            cfg.codebook_dim,
            cfg.codebook_entries,
            cfg.codebook_groups,
            cfg.gumbel_start,
        )
        self.project_q = nn.Linear(cfg.codebook_dim, cfg.final_dim)
        self.final_proj = nn.Linear(upstream.config.hidden_size, cfg.final_dim)
        self.quantizer_dropout = nn.Dropout(cfg.quantizer_dropout)
        # optimizer updates so far: a buffer, so the temperature schedule resumes with the checkpoint
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.monitor = CodebookMonitor(cfg.codebook_groups, cfg.codebook_entries)

    def after_step(self, step: int) -> None:
        """Record the number of optimizer updates (drives the Gumbel temperature)."""
        self.updates.fill_(step)

    def compute(
        self, wavs: Tensor, wav_lens: Tensor, mask: Tensor | None = None, distractors: Tensor | None = None
    ) -> Wav2Vec2PretrainOutput:
        """The loss for a batch; `mask` (B, T') and `distractors` (N, K) are drawn when not given."""
        cfg, up = self.cfg, self.upstream
        self.quantizer.temperature = gumbel_temperature(
            int(self.updates), cfg.gumbel_start, cfg.gumbel_end, cfg.gumbel_decay
        )
        conv, lengths = up.conv_features(wavs, wav_lens)
        if cfg.feature_grad_mult != 1.0:  # same values, a scaled gradient: stabilises the CNN (fairseq)
            conv = conv * cfg.feature_grad_mult + conv.detach() * (1.0 - cfg.feature_grad_mult)
        valid = padding_mask(lengths, conv.shape[1])
        penalty = (conv.float().square().mean(-1) * valid).sum() / valid.sum()
        projection = up.feature_projection
        normed = projection.norm(conv) if projection.norm is not None else conv
        feats = projection.dropout(projection.linear(normed))
        if mask is None:
            mask = compute_span_mask(
                lengths,
                conv.shape[1],
                cfg.mask_start_prob * cfg.mask_span,
                cfg.mask_span,
                min_spans=cfg.min_spans,
            )
        mask = mask & valid
        _, final = up.encode(feats, lengths, mask)
        predicted = self.final_proj(final[mask])  # (N, final_dim)
        vq = self.quantizer(self.quantizer_dropout(normed[mask])[None])  # only masked frames are targets
        targets = self.project_q(vq.quantized[0])
        if distractors is None:
            distractors = sample_distractors(mask, cfg.num_negatives)
        logits = contrastive_logits(predicted, targets, distractors, cfg.logit_temperature, vq.codes[0])
        contrastive = F.cross_entropy(
            logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        )
        loss = contrastive + cfg.diversity_weight * vq.loss + cfg.feature_penalty * penalty
        return Wav2Vec2PretrainOutput(loss, contrastive, vq.loss, penalty, vq, logits, mask, lengths)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Loss and scalars to log (loss parts, accuracy, mask share, codebook perplexity, temperature)."""
        out = self.compute(batch.wavs, batch.wav_lens)
        scalars = {
            "contrastive": out.contrastive.item(),
            "diversity": out.diversity.item(),
            "feature_penalty": out.feature_penalty.item(),
            "accuracy": float((out.logits.argmax(-1) == 0).float().mean()),
            "mask_share": float(out.mask.sum()) / max(int(out.lengths.sum()), 1),
            "temperature": self.quantizer.temperature,
        }
        return out.loss, {**scalars, **self.monitor(out.vq)}


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train wav2vec 2.0 on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = Wav2Vec2Objective(upstream, cfg)
    return run_pretraining(
        "wav2vec2",
        objective,
        upstream,
        cfg,
        data,
        run_dir,
        after_step=lambda model, step: model.after_step(step),
    )

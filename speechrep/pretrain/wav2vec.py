"""wav2vec pre-training (Schneider et al. 2019, https://arxiv.org/abs/1904.05862): from the causal context
c_t, predict the encoder feature z_{t+k} for k = 1..K (K = 12), one affine map h_k per step, against 10
distractors drawn uniformly from the other frames of the same utterance, by binary cross-entropy:

    L_k = − Σ_t [ log σ(z_{t+k}ᵀ h_k(c_t)) + Σ_{n=1}^{λ} log σ(−z̃_nᵀ h_k(c_t)) ],   L = Σ_k L_k

normalised, as fairseq's `wav2vec` criterion, by the number of (t, k) pairs (the positives). The maps h_k are
fairseq's `ConvTranspose2d(C, C, (1, K))` (a weight per step, one shared bias). The distractors of target
frame t + k are the same for every k that predicts it (fairseq draws them per target frame).

`balanced_classes` (fairseq's option of that name; off in the paper) weighs each distractor's term by 1/λ,
so the positive and the distractors weigh the same. Unbalanced, a small model on little data collapses at
once: with encoder features ≥ 0 (ReLU, then log compression), the cheapest way to the constant-score optimum
(every score logit(1/(1+λ))) is an encoder output constant in time, after which no gradient is left
(measured on the tiny corpus: the features' spread over time falls more than tenfold within 25 updates and
accuracy stays at 1/(1+λ) for any learning rate from 1e-4 to 2e-3). Balanced, the constant-score optimum is
score 0, where training starts, and the tiny model learns (accuracy 0.09 → 0.61 in 150 updates on one
batch). The CPU presets set it.

Deviations: the paper's k = 1..K (`first_step: 1`); fairseq's `offset: auto` starts at ceil(receptive field /
stride) = 3 for this encoder, so the released models predict k = 3..14 (`first_step=3` reproduces it).
Distractors come from each utterance's valid frames (fairseq crops a batch to equal lengths instead).

vq-wav2vec (`speechrep.pretrain.vq_wav2vec`) trains with the same objective on the quantized features.
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
from speechrep.pretrain.apc import CodebookMonitor
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """wav2vec large on LibriSpeech 960 h (fairseq README): Adam, warm-up 500 updates to 5e-3, cosine."""

    upstream: str = "wav2vec_large"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config
    prediction_steps: int = 12  # K
    num_negatives: int = 10  # λ distractors per target frame
    first_step: int = 1  # predict k = first_step .. first_step + K − 1 (fairseq's auto offset: 3)
    balanced_classes: bool = False  # weigh each distractor by 1/λ (fairseq's option; see above)
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=93.75, max_utterance=9.375, min_utterance=1.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=400_000, lr=5e-3, warmup_steps=500, schedule="cosine",
                                            clip_norm=None, eval_every=5000, log_every=200)
    )


def sample_negatives(lengths: Tensor, width: int, num: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """(B, width, num) frame indices: for frame t of utterance b, uniform over its valid frames but t."""
    device = generator.device if generator is not None else lengths.device
    noise = torch.rand(len(lengths), width, num, generator=generator, device=device).to(lengths.device)
    n = lengths[:, None, None]
    t = torch.arange(width, device=lengths.device)[None, :, None]
    draw = torch.minimum((noise * (n - 1)).long(), (n - 2).clamp(min=0))
    draw = draw + (draw >= t).long()  # step over the frame itself
    return torch.minimum(draw, (n - 1).clamp(min=0))


def wav2vec_loss(predictions: Tensor, targets: Tensor, negatives: Tensor, lengths: Tensor,
                 first_step: int = 1, balanced_classes: bool = False) -> tuple[Tensor, Tensor]:
    """(loss, accuracy) of predictions (B, T, K, C) of targets (B, T, C) against distractors `negatives`
    (B, T, N) (frame indices into the same utterance, per target frame).

    Binary cross-entropy summed over the true and distractor scores (dot products) of every valid (t, k) pair
    (t + k inside the utterance), divided by the number of pairs; accuracy: the true score beats every one.
    `balanced_classes` weighs each distractor's term by 1/N."""
    B, T, K, _ = predictions.shape
    rows = torch.arange(B, device=targets.device)[:, None, None]
    candidates = torch.cat([targets[:, :, None], targets[rows, negatives]], dim=2)  # (B, T, 1 + N, C)
    total = predictions.new_zeros((), dtype=torch.float32)
    pairs, correct = 0, predictions.new_zeros((), dtype=torch.float32)
    for s in range(K):
        k = first_step + s
        if T <= k:
            break
        scores = torch.einsum("btc,btnc->btn", predictions[:, : T - k, s], candidates[:, k:])
        scores = scores[padding_mask(lengths - k, T - k)].float()  # (pairs, 1 + N)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        weights = None
        if balanced_classes:
            weights = torch.full_like(scores, 1.0 / max(scores.shape[1] - 1, 1))
            weights[:, 0] = 1.0
        total = total + F.binary_cross_entropy_with_logits(scores, labels, weights, reduction="sum")
        pairs += len(scores)
        correct = correct + (scores[:, 0:1] > scores[:, 1:]).all(-1).float().sum()
    if pairs == 0:
        raise ValueError(f"utterances of {int(lengths.max())} frames leave nothing to predict")
    return total / pairs, (correct / pairs).detach()


def gumbel_temperature(step: int, start: float, end: float, decay: float) -> float:
    """fairseq's annealed Gumbel-softmax temperature after `step` updates: max(start · decay^step, end)."""
    return max(start * decay**step, end)


class Wav2VecObjective(nn.Module):
    """A wav2vec / vq-wav2vec upstream plus the per-step prediction maps (pre-training only).

    With a quantizer, `quantizer_weight` scales its loss (k-means: codebook + γ·commitment; Gumbel: the
    diversity (G·V − perplexity) / G·V) and `gumbel` = (start, end, decay) anneals the Gumbel temperature."""

    def __init__(self, upstream: nn.Module, prediction_steps: int, num_negatives: int, first_step: int = 1,
                 quantizer_weight: float = 0.0, gumbel: tuple[float, float, float] = (2.0, 0.5, 0.999995),
                 balanced_classes: bool = False):
        super().__init__()
        self.upstream = upstream
        self.num_negatives, self.first_step = num_negatives, first_step
        self.balanced_classes = balanced_classes
        self.quantizer_weight, self.gumbel = quantizer_weight, tuple(gumbel)
        # fairseq's project_to_steps: a weight per step, one bias
        self.project_to_steps = nn.ConvTranspose2d(upstream.hidden_sizes[-1], upstream.hidden_sizes[0],
                                                   (1, prediction_steps))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # resumes the temperature schedule
        c = upstream.config
        self.monitor = CodebookMonitor(c.vq_groups, c.vq_vars) if c.vq_type != "none" else None

    def after_step(self, step: int) -> None:
        """Record the number of optimizer updates (drives the Gumbel temperature)."""
        self.updates.fill_(step)

    def compute(self, wavs: Tensor, wav_lens: Tensor, negatives: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor | None, Any]:
        """(total loss, contrastive loss, accuracy, quantizer output) for a batch; `negatives` (B, T', N)."""
        up = self.upstream
        if up.config.vq_type == "gumbel":
            up.quantizer.temperature = gumbel_temperature(int(self.updates), *self.gumbel)
        out, vq = up.forward_with_quantizer(wavs, wav_lens)
        targets, context, lengths = out.hidden_states[0], out.hidden_states[-1], out.lengths
        predictions = self.project_to_steps(context.transpose(1, 2)[..., None]).permute(0, 2, 3, 1)
        if negatives is None:
            negatives = sample_negatives(lengths, targets.shape[1], self.num_negatives)
        contrastive, accuracy = wav2vec_loss(predictions, targets, negatives, lengths, self.first_step,
                                            self.balanced_classes)
        loss = contrastive if vq is None else contrastive + self.quantizer_weight * vq.loss
        return loss, contrastive, accuracy, vq

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Loss and scalars to log (contrastive loss, accuracy; vq-wav2vec: codebook use, temperature)."""
        loss, contrastive, accuracy, vq = self.compute(batch.wavs, batch.wav_lens)
        scalars = {"contrastive": float(contrastive.detach()), "accuracy": float(accuracy)}
        if vq is not None and self.monitor is not None:
            scalars.update(self.monitor(vq), quantizer_loss=float(vq.loss.detach()))
            if self.upstream.config.vq_type == "gumbel":
                scalars["temperature"] = float(self.upstream.quantizer.temperature)
        return loss, scalars


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train wav2vec on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    if upstream.config.vq_type != "none":
        log.warning("wav2vec: %s has a quantizer; its loss is not used here (see the vq_wav2vec method)",
                    cfg.upstream)
    objective = Wav2VecObjective(upstream, cfg.prediction_steps, cfg.num_negatives, cfg.first_step,
                                 balanced_classes=cfg.balanced_classes)
    return run_pretraining("wav2vec", objective, upstream, cfg, data, run_dir)

"""CPC pre-training, modified CPC (Rivière et al. 2020, https://arxiv.org/abs/2002.02848; after van den
Oord et al. 2018, https://arxiv.org/abs/1807.03748): from the LSTM context at frame t, predict the encoder
output at t + k for k = 1..12, one prediction network per step, by InfoNCE against negatives.

Modified CPC's choices (the defaults here): a one-layer causal transformer per step as the prediction network
(`predictor: linear` gives the original CPC's linear maps), the score of a candidate is the mean of its
elementwise product with the prediction, 128 negatives per frame drawn from the same speaker (the reference
fills each batch with one speaker's sequences and draws over the batch), the same draw for every step. Here a
batch mixes speakers, so `negatives: speaker` draws from the frames of the batch's utterances of the same
speaker (the cut's supervision; an utterance without one is its own speaker), `sequence` from the same
utterance only and `batch` from the whole batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.cpc import CPCHead
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """Modified CPC settings (CPC_audio, LibriSpeech clean-100): Adam 2e-4, 64 sequences of 1.28 s a step."""

    upstream: str = "cpc"
    model: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of the hub config, e.g. {hidden_size: 512}
    n_predicts: int = 12  # steps ahead, one prediction network each
    n_negatives: int = 128  # negatives per frame (shared by all steps)
    predictor: Literal["transformer", "linear"] = "transformer"
    predictor_heads: int = 8  # attention heads of the transformer predictors
    negatives: Literal["speaker", "sequence", "batch"] = "speaker"
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=81.92, max_utterance=1.28, min_utterance=1.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=400_000, lr=2e-4, schedule="constant", clip_norm=None, eval_every=5000, log_every=200
        )
    )


def sample_negatives(
    valid: Tensor, groups: Tensor, num: int, generator: torch.Generator | None = None
) -> Tensor:
    """(B, T, num) flat indices into the B·T frames: for frame (b, t), valid frames of b's group.

    `valid` (B, T) marks real frames, `groups` (B,) says which utterances pool their frames (equal ids pool);
    draws are uniform over the pooled frames, the frame itself included (as in the reference)."""
    batch, width = valid.shape
    _, group = torch.unique(groups, return_inverse=True)
    frame_group = group[:, None].expand(batch, width)[valid]  # (F,) group of each valid frame
    order = torch.argsort(frame_group, stable=True)
    pooled = valid.flatten().nonzero().squeeze(1)[order]  # valid frames, grouped
    counts = torch.bincount(frame_group, minlength=int(group.max()) + 1)
    offsets = counts.cumsum(0) - counts
    noise = torch.rand(
        batch,
        width,
        num,
        generator=generator,
        device=generator.device if generator is not None else valid.device,
    ).to(valid.device)
    size = counts[group][:, None, None]
    draw = torch.minimum((noise * size).long(), size - 1)
    return pooled[offsets[group][:, None, None] + draw]


def info_nce(
    predictions: Tensor, encoded: Tensor, negatives: Tensor, step: int, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """InfoNCE of predicting encoded[:, t + step] from predictions[:, t]: (mean loss, accuracy), valid frames.

    Scores are the mean elementwise product (modified CPC); `negatives` (B, T, N, H) serve every step."""
    width = encoded.shape[1] - step
    pred = predictions[:, :width]
    positive = (pred * encoded[:, step:]).mean(-1, keepdim=True)  # (B, T - k, 1)
    negative = torch.einsum("bth,btnh->btn", pred, negatives[:, :width]) / pred.shape[-1]
    logits = torch.cat([positive, negative], dim=-1)[valid[:, step:]]  # (frames, 1 + N)
    loss = F.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long, device=logits.device))
    return loss, (logits.argmax(-1) == 0).float().mean()


class CPCObjective(nn.Module):
    """A CPC upstream plus its per-step prediction networks (pre-training only)."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        size = upstream.config.hidden_size
        if cfg.predictor == "transformer":
            head = CPCHead(upstream.config, cfg.n_predicts, cfg.n_negatives, cfg.predictor_heads)
            self.predictors = head.predictors
        else:
            self.predictors = nn.ModuleList(nn.Linear(size, size, bias=False) for _ in range(cfg.n_predicts))

    def negative_groups(self, batch: AudioBatch) -> Tensor:
        """(B,) ids of the utterances whose frames pool as negatives, per `cfg.negatives`."""
        count = len(batch)
        if self.cfg.negatives == "batch":
            return torch.zeros(count, dtype=torch.long)
        if self.cfg.negatives == "sequence" or batch.cuts is None:
            return torch.arange(count)
        names = [
            next((s.speaker for s in cut.supervisions if s.speaker), None) or f"\0{cut.id}"
            for cut in batch.cuts
        ]
        index = {name: i for i, name in enumerate(dict.fromkeys(names))}
        return torch.tensor([index[name] for name in names])

    def compute(
        self, wavs: Tensor, wav_lens: Tensor, groups: Tensor, negatives: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean InfoNCE over the steps, per-step accuracies (n_predicts,); `negatives` (B, T, N) optional."""
        out = self.upstream(wavs, wav_lens)
        encoded, context, lengths = out.hidden_states[0], out.hidden_states[-1], out.lengths
        valid = padding_mask(lengths, encoded.shape[1])
        if negatives is None:
            negatives = sample_negatives(valid, groups.to(valid.device), self.cfg.n_negatives)
        negative_frames = encoded.flatten(0, 1)[negatives]  # (B, T, N, H)
        losses, accuracies = [], []
        for step, predictor in enumerate(self.predictors, start=1):
            if not bool(valid[:, step:].any()):
                break
            loss, accuracy = info_nce(predictor(context), encoded, negative_frames, step, valid)
            losses.append(loss)
            accuracies.append(accuracy)
        if not losses:
            raise ValueError(f"utterances of {int(lengths.max())} frames leave nothing to predict")
        return torch.stack(losses).mean(), torch.stack(accuracies).detach()

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Loss and scalars to log: accuracy of picking the true frame, mean and at the first/last step."""
        loss, accuracies = self.compute(batch.wavs, batch.wav_lens, self.negative_groups(batch))
        return loss, {
            "accuracy": float(accuracies.mean()),
            "acc_first_step": float(accuracies[0]),
            "acc_last_step": float(accuracies[-1]),
        }


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train CPC on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    return run_pretraining("cpc", CPCObjective(upstream, cfg), upstream, cfg, data, run_dir)

"""Training between compression steps: the pruned model learns back the unpruned model's hidden states.

    objective = SelfDistillation(student, teacher)           # student: pruned copy; teacher: the original
    trained = retrain(objective, cfg, data, run_dir, masks)   # the shared loop: resumable, one process
    scores = gradient_head_importance(student, teacher, batches)

The loss (DistilHuBERT's, `distillation_loss`) compares every hidden state of the student with the same
state of the frozen teacher, layer by layer: L1 − λ·log σ(cos) over valid frames, summed over layers. Pruning
keeps the widths and the number of layers, so no prediction head is needed: the student is pulled back onto
the teacher's own representations. This replaces continuing the model's SSL objective (which would need its
targets, e.g. the k-means labels of a HuBERT run) with a target every upstream has.

Gradient importance of heads (the deck's "L1 norm of the gradients"): the summed |∂L/∂w| over a head's q, k,
v rows and out_proj columns. Against a teacher identical to the student the loss and its gradient are zero,
so the importance is measured with the student's input masked (spans of the waveform zeroed, as masked
prediction does; `mask_prob` of the frames), which makes every head's contribution to recovering the
teacher's states visible.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from speechrep.compress.sparse import Masks, apply_masks
from speechrep.compress.structured import transformer_encoder
from speechrep.data.batching import AudioBatch
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import run_pretraining
from speechrep.pretrain.distilhubert import distillation_loss
from speechrep.upstream.base import padding_mask


class SelfDistillation(nn.Module):
    """Student upstream trained to reproduce every hidden state of a frozen teacher of the same shape."""

    def __init__(self, upstream: nn.Module, teacher: nn.Module, cosine_weight: float = 1.0):
        super().__init__()
        self.upstream, self.cosine_weight = upstream, cosine_weight
        # a plain attribute, not a submodule: the teacher is neither trained, checkpointed nor exported
        object.__setattr__(self, "teacher", teacher.requires_grad_(False).eval())

    def loss(self, wavs: Tensor, wav_lens: Tensor,
             student_wavs: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(summed loss, per-layer loss) of the student hearing `student_wavs` (default: `wavs`)."""
        if next(self.teacher.parameters()).device != wavs.device:
            self.teacher.to(wavs.device)
        with torch.inference_mode():
            target = torch.stack(self.teacher(wavs, wav_lens).hidden_states, 1)
        target = target.clone()  # leaves inference mode so autograd may save it
        out = self.upstream(wavs if student_wavs is None else student_wavs, wav_lens)
        pred = torch.stack(out.hidden_states, 1)
        valid = padding_mask(out.lengths, pred.shape[2])
        l1, cos = distillation_loss(pred, target, valid, self.cosine_weight)
        return (l1 + cos).sum(), l1 + cos

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        total, per_layer = self.loss(batch.wavs, batch.wav_lens)
        scalars = {"distill": float(total.detach())}
        scalars.update({f"layer{i}": float(v) for i, v in enumerate(per_layer.detach().tolist())})
        return total, scalars


def masked_waveform(wavs: Tensor, wav_lens: Tensor, stride: int, mask_prob: float, span: int = 10,
                    seed: int = 0) -> Tensor:
    """A copy of `wavs` with spans of `span` frames (`stride` samples each) zeroed on about `mask_prob` of
    each utterance's frames (HuBERT's span sampling, seeded)."""
    frames = (wav_lens // stride).clamp(min=1)
    generator = torch.Generator().manual_seed(seed)
    mask = compute_span_mask(frames.cpu(), int(frames.max()), mask_prob, span, generator=generator)
    samples = mask.repeat_interleave(stride, dim=1)[:, :wavs.shape[1]]
    out = wavs.clone()
    out[:, :samples.shape[1]][samples.to(wavs.device)] = 0.0
    return out


def gradient_head_importance(upstream: nn.Module, teacher: nn.Module, batches: Iterable[AudioBatch],
                             mask_prob: float = 0.3) -> list[Tensor]:
    """Per layer with attention, (H,) summed |gradient| of the self-distillation loss (masked student input)
    over each head's q/k/v rows and out_proj columns, accumulated batch by batch."""
    # a copy in eval mode (no dropout: the importance is a property of the model, not of a dropout draw) that
    # may share its weights with the teacher's
    upstream = copy.deepcopy(upstream).requires_grad_(True).eval()
    _, encoder = transformer_encoder(upstream)
    attentions = [block.attention for block in encoder.layers if block.attention is not None]
    objective = SelfDistillation(upstream, teacher)
    scores = [torch.zeros(a.num_heads, dtype=torch.float64) for a in attentions]
    device = next(upstream.parameters()).device
    for index, batch in enumerate(batches):
        batch = batch.to(device)
        upstream.zero_grad(set_to_none=True)
        masked = masked_waveform(batch.wavs, batch.wav_lens, upstream.stride, mask_prob, seed=index)
        loss, _ = objective.loss(batch.wavs, batch.wav_lens, masked)
        loss.backward()
        for attention, total in zip(attentions, scores):
            heads, width = attention.num_heads, attention.head_dim
            grad = attention.out_proj.weight.grad.abs().view(-1, heads, width).sum(dim=(0, 2))
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                rows = proj.weight.grad.abs().sum(dim=1) + proj.bias.grad.abs()
                grad = grad + rows.view(heads, width).sum(dim=1)
            total += grad.double().cpu()
    return scores


def retrain(objective: nn.Module, cfg: Any, data: str | Path, run_dir: Path,
            masks: Masks | None = None) -> None:
    """Train `objective` (which owns the student upstream) for `cfg.steps` steps with the shared loop in
    `run_dir` (a killed run resumes there); with `masks`, pruned weights are zeroed after every step."""
    student = objective.upstream.requires_grad_(True)
    after_step = None
    if masks is not None:
        apply_masks(student, masks)
        after_step = lambda model, step: apply_masks(student, masks)  # noqa: E731
    train_cfg = dataclasses.replace(cfg.train, max_steps=cfg.steps)
    run_pretraining("compress", objective, student, dataclasses.replace(cfg, train=train_cfg), data, run_dir,
                    after_step=after_step)

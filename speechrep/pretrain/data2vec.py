"""data2vec audio pre-training (Baevski et al. 2022, https://arxiv.org/abs/2202.03555): regress a teacher.

The student encodes the waveform with spans of frames masked (p = 0.65, span 10: fairseq's mask_prob, so
about half the frames end up masked); the teacher, an exponential moving average of the student's Transformer
layers, encodes the same CNN features unmasked. Targets are the teacher's top-K (8) layer outputs, taken at
the feed-forward block's output before the layer's final residual and layer norm (fairseq's `layer_result`),
each instance-normalised over the valid frames of its utterance, then averaged. A linear head maps the
student's last layer to the targets at masked frames; the loss is the squared error (or smooth L1 with
`loss_beta > 0`) summed over dimensions, scaled by 1/sqrt(D), averaged over masked frames.

As in the released recipe, the CNN, projection and positional convolutions are shared (the teacher reads the
student's current values); only the Transformer layers and the encoder's layer norm are averaged, with τ
ramped linearly from 0.999 to 0.9999 over `ema_anneal_steps` updates and fixed after. The teacher never gets
gradients, lives in the training checkpoint (exact resume) and is not part of the exported upstream.
`target_std` (std of the targets over masked frames, averaged over dimensions), `pred_std` and
`zero_pred_loss` (the loss of predicting 0 everywhere, which the student must beat) and `target_variation`
(how much the raw, unnormalised teacher outputs change over time relative to their size: instance
normalisation hides a teacher that has become constant over time) are logged; a warning is logged when the
targets collapse (`target_std` below `min_target_std` or `target_variation` below `min_target_variation`).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.errors import ConfigError
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask
from speechrep.upstream.loading import load_upstream

log = logging.getLogger(__name__)


@dataclass
class Config:
    """data2vec audio Base pre-training (fairseq `base_librispeech`): 400k steps, Adam 5e-4, tri-stage LR."""

    upstream: str = "data2vec_base"
    model: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of the hub config, e.g. {layer_drop: 0.05}
    mask_prob: float = 0.65  # fairseq's mask_prob: mask_prob * T / mask_span spans per utterance
    mask_span: int = 10
    min_spans: int = 2
    top_k: int = 8  # teacher layers averaged into the target
    target: Literal["ffn", "layer"] = "ffn"  # ffn: feed-forward output before the residual + final layer norm
    average_norm: Literal["none", "instance", "layer"] = "none"  # normalise the averaged target again
    loss_beta: float = 0.0  # 0: squared error; > 0: smooth L1 with this beta
    ema_start: float = 0.999
    ema_end: float = 0.9999
    ema_anneal_steps: int = 30_000  # updates over which τ rises linearly, fixed after
    min_target_std: float = 0.1  # below: targets have collapsed (a warning, once per episode)
    min_target_variation: float = 0.05  # below: the raw teacher outputs barely change over time (collapse)
    data: PretrainData = field(default_factory=PretrainData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=400_000, lr=5e-4))

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ConfigError(
                f"keys ema_start/ema_end: need 0 <= ema_start <= ema_end <= 1, got "
                f"{self.ema_start}, {self.ema_end}"
            )
        if self.top_k < 1:
            raise ConfigError(f"key 'top_k': must be >= 1, got {self.top_k}")
        if self.ema_anneal_steps < 0:
            raise ConfigError(f"key 'ema_anneal_steps': must be >= 0, got {self.ema_anneal_steps}")


def ema_decay(step: int, start: float, end: float, anneal_steps: int) -> float:
    """τ after `step` updates: linear from `start` to `end` over `anneal_steps` updates, then `end`."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return end
    return start + (end - start) * step / anneal_steps


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, decay: float, copy_prefixes: tuple[str, ...] = ()
) -> None:
    """teacher ← decay·teacher + (1 − decay)·student per parameter; `copy_prefixes` are copied as is."""
    student_params = dict(student.named_parameters())
    for name, param in teacher.named_parameters():
        source = student_params[name].detach()
        if name.startswith(copy_prefixes):
            param.copy_(source)
        else:
            param.lerp_(source.to(param.dtype), 1.0 - decay)
    student_buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        buffer.copy_(student_buffers[name])


def instance_norm_over_time(x: Tensor, valid: Tensor, eps: float = 1e-5) -> Tensor:
    """(B, T, C) normalised to zero mean, unit variance per utterance and channel over its valid frames.

    Padded frames are excluded from the statistics and set to 0 (F.instance_norm over the valid frames)."""
    weight = valid[..., None].to(x.dtype)
    count = weight.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * weight).sum(1, keepdim=True) / count
    var = ((x - mean).square() * weight).sum(1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps) * weight


def average_top_layers(layers: list[Tensor], valid: Tensor, average_norm: str = "none") -> Tensor:
    """data2vec targets: layers instance-normalised over valid frames, averaged, maybe normalised again."""
    target = torch.stack([instance_norm_over_time(layer.float(), valid) for layer in layers]).mean(0)
    if average_norm == "instance":
        target = instance_norm_over_time(target, valid)
    elif average_norm == "layer":
        target = F.layer_norm(target, target.shape[-1:]) * valid[..., None]
    return target


def regression_loss(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Per-frame loss of (N, D) predictions: squared error (beta 0) or smooth L1, summed over D, / sqrt(D)."""
    if beta == 0:
        per_dim = F.mse_loss(pred.float(), target.float(), reduction="none")
    else:
        per_dim = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta)
    return per_dim.sum(-1) / math.sqrt(pred.shape[-1])


class Data2VecObjective(nn.Module):
    """The student upstream, its regression head and the EMA teacher encoder; forward gives the loss."""

    def __init__(self, upstream: nn.Module, cfg: Config):
        super().__init__()
        num_layers = len(upstream.encoder.layers)
        if cfg.top_k > num_layers:
            raise ConfigError(f"key 'top_k': {cfg.top_k} exceeds the {num_layers} layers of {cfg.upstream}")
        self.upstream, self.cfg = upstream, cfg
        width = upstream.config.hidden_size
        self.head = nn.Linear(width, width)
        self.teacher = copy.deepcopy(upstream.encoder).requires_grad_(False).eval()
        self._ffn_outputs: list[Tensor] = []
        if cfg.target == "ffn":
            for layer in self.teacher.layers[-cfg.top_k :]:
                layer.ffn.register_forward_hook(lambda _module, _args, out: self._ffn_outputs.append(out))
        self._collapsed = False

    def train(self, mode: bool = True) -> Data2VecObjective:
        """Train/eval the student; the teacher always stays in eval mode (no dropout or layer drop)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def update_teacher(self, step: int) -> float:
        """One EMA step after optimizer update `step`; returns the τ used."""
        cfg = self.cfg
        decay = ema_decay(step, cfg.ema_start, cfg.ema_end, cfg.ema_anneal_steps)
        # positions are shared with the student, as the released recipe (ema_layers_only)
        ema_update(self.teacher, self.upstream.encoder, decay, copy_prefixes=("pos_conv.",))
        return decay

    @torch.no_grad()
    def teacher_layers(self, feats: Tensor, lengths: Tensor) -> list[Tensor]:
        """The teacher's top-K (B, T, D) outputs (FFN or layer) on unmasked projected features, unnormalised."""
        valid = padding_mask(lengths, feats.shape[1])
        self._ffn_outputs.clear()
        hidden, _ = self.teacher(feats, valid if bool((~valid).any()) else None)
        layers = list(self._ffn_outputs) if self.cfg.target == "ffn" else hidden[-self.cfg.top_k :]
        self._ffn_outputs.clear()
        return layers

    @torch.no_grad()
    def targets(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, D) regression targets from the teacher on unmasked projected features."""
        valid = padding_mask(lengths, feats.shape[1])
        return average_top_layers(self.teacher_layers(feats, lengths), valid, self.cfg.average_norm)

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        cfg, up = self.cfg, self.upstream
        feats, lengths = up.extract_features(batch.wavs, batch.wav_lens)
        valid = padding_mask(lengths, feats.shape[1])
        mask = compute_span_mask(lengths, feats.shape[1], cfg.mask_prob, cfg.mask_span, cfg.min_spans) & valid
        with torch.no_grad():
            layers = self.teacher_layers(feats.detach(), lengths)
            target = average_top_layers(layers, valid, cfg.average_norm)[mask]
            variation = temporal_variation(torch.stack(layers).float().mean(0), valid)
        _, final = up.encode(feats, lengths, mask)
        pred = self.head(final[mask])
        loss = regression_loss(pred, target, cfg.loss_beta).mean()
        target_std, pred_std = _std_over_frames(target), _std_over_frames(pred.detach().float())
        self._check_collapse(target_std, variation)
        # the loss of always predicting 0 (the targets' mean): the student beats it only by using context
        zero_loss = float(regression_loss(torch.zeros_like(target), target, cfg.loss_beta).mean())
        return loss, {
            "target_std": target_std,
            "target_variation": variation,
            "pred_std": pred_std,
            "zero_pred_loss": zero_loss,
            "mask_share": float(mask[valid].float().mean()),
        }

    def _check_collapse(self, target_std: float, variation: float) -> None:
        cfg = self.cfg
        collapsed = target_std < cfg.min_target_std or variation < cfg.min_target_variation
        if collapsed and not self._collapsed:
            log.warning(
                "data2vec targets collapsed: normalised std %.4f (min %.4f), temporal variation of the raw "
                "teacher outputs %.4f (min %.4f): the teacher outputs nearly the same vector at every frame",
                target_std,
                cfg.min_target_std,
                variation,
                cfg.min_target_variation,
            )
        self._collapsed = collapsed


def temporal_variation(x: Tensor, valid: Tensor) -> float:
    """Scale-free change over time of (B, T, D) features: std over each utterance's valid frames (mean over
    utterances and dimensions) divided by the features' RMS; near 0 when every frame is the same vector."""
    weight = valid[..., None].to(x.dtype)
    count = weight.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * weight).sum(1, keepdim=True) / count
    std = (((x - mean).square() * weight).sum(1, keepdim=True) / count).sqrt().mean()
    rms = ((x.square() * weight).sum() / (count.sum() * x.shape[-1])).sqrt()
    return float(std / rms.clamp(min=1e-12))


def _std_over_frames(x: Tensor) -> float:
    """Std over frames of (N, D) features, averaged over dimensions (fairseq's target_var/pred_var)."""
    if x.shape[0] < 2:
        return float("nan")
    return float(torch.sqrt(x.var(dim=0) + 1e-6).mean())


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train data2vec audio on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = Data2VecObjective(upstream, cfg)

    def after_step(model: nn.Module, step: int) -> None:
        model.update_teacher(step)

    return run_pretraining("data2vec", objective, upstream, cfg, data, run_dir, after_step=after_step)

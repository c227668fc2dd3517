"""DistilHuBERT (Chang et al. 2022, https://arxiv.org/abs/2110.01900): layer-wise distillation of a teacher.

A small student (the hub's `distilhubert`: HuBERT's CNN + 2 Transformer layers) predicts chosen teacher layers
(4, 8 and 12 of a 12-layer teacher) from its last layer, one linear head per target layer; the loss per target
layer is L1 − λ·log σ(cos) over valid frames (λ = 1), summed over layers. The teacher is any hub upstream
(`teacher=NAME_OR_DIR`, through `load_upstream`), frozen, in eval mode, run under `inference_mode` and never
saved with the student; by default the student starts from the teacher's CNN and first layers.

Robust variants (Huang et al., Interspeech 2022, "Improving distortion robustness of self-supervised speech
processing tasks with domain adaptation"), on when `distortions` is non-empty:
- cross-distortion mapping: each student utterance hears a copy distorted by one type drawn uniformly from
  `distortions` (noise, reverb, band_limit, clip, speed, clean); the teacher hears the clean utterance
  (`teacher_input: clean`, setup 1) or another independently distorted copy (`distorted`, setup 2). Speed
  changes the timeline: the teacher's frames are linearly interpolated onto the student's.
- domain-adversarial training (`adversarial_weight` λ_adv > 0): a classifier of the student's distortion type
  reads the student's time-pooled last layer through a gradient reversal layer (gradient × −λ_adv), so the
  classifier learns the type while the student learns to hide it; its accuracy is logged as `adv_acc`.

Students of other families: a MelHuBERT student (`upstream: melhubert_base`, `model: {num_layers: 2, ...}`)
starts from a MelHuBERT teacher's projection, positions, first layers and corpus statistics (without
`init_from_teacher`, or from another teacher, it computes its own statistics on the training audio). A
sequence-compressed student (`model.downsample`, see `speechrep.upstream.melhubert`) predicts the teacher's
frames from its segments repeated onto the frame grid; alignment-pooled students read the cuts' phone
boundaries (or `boundaries=FILE`), unit-pooled ones fit their codebook first. The three together are the
integrated small model of docs/sequence_compression.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch
from speechrep.data.boundaries import BoundarySource
from speechrep.errors import ConfigError
from speechrep.pretrain.common import PretrainData, run_pretraining, set_corpus_statistics
from speechrep.pretrain.distortion import Distorter, DistortionConfig
from speechrep.pretrain.melhubert import fit_unit_codebook
from speechrep.train import TrainConfig
from speechrep.upstream.base import on_frame_grid, padding_mask
from speechrep.upstream.distilhubert import DistilHuBERTHeads
from speechrep.upstream.loading import load_upstream
from speechrep.upstream.registry import list_upstreams

log = logging.getLogger(__name__)

@dataclass
class Config(DistortionConfig):
    """DistilHuBERT (s3prl's distiller): 200k steps, batch 24 utterances, Adam 2e-4 with 7 % warm-up; the
    robust variants' `distortions` and their ranges come from `DistortionConfig`."""

    upstream: str = "distilhubert"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the student's hub config
    teacher: str = "hubert_base"  # a hub name (weights from teacher_checkpoint) or an upstream directory/file
    teacher_checkpoint: str | None = None
    teacher_model: dict[str, Any] = field(default_factory=dict)  # overrides of the teacher's config
    target_layers: list[int] | None = None  # teacher hidden-state indices; None: 3 spread over its depth
    cosine_weight: float = 1.0  # λ of −log σ(cos)
    init_from_teacher: bool = True  # start from the teacher's CNN, projection and first layers
    # robust variants (Huang et al. 2022); empty `distortions`: plain DistilHuBERT
    teacher_input: Literal["clean", "distorted"] = "clean"
    adversarial_weight: float = 0.0  # λ_adv of the gradient reversal; 0: no distortion classifier
    stats_seconds: float = 3600.0  # a log-mel student's corpus statistics, when not the teacher's
    boundaries: str = ""  # an alignment-pooled student: a boundaries file; empty: the cuts' phone alignments
    unit_fit_seconds: float = 600.0  # a unit-pooled student: audio whose input frames fit its codebook
    data: PretrainData = field(default_factory=PretrainData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=200_000, lr=2e-4))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adversarial_weight < 0:
            raise ConfigError(f"key 'adversarial_weight': must be >= 0, got {self.adversarial_weight}")
        if self.adversarial_weight > 0 and len(self.distortions) < 2:
            raise ConfigError("key 'adversarial_weight': the distortion classifier needs >= 2 distortions")


def proportional_layers(num_layers: int, count: int = 3) -> list[int]:
    """`count` teacher layers evenly spread over `num_layers` (4, 8, 12 of 12), without repeats."""
    return sorted({max(1, round(num_layers * i / count)) for i in range(1, count + 1)})


# --- losses and the adversarial pieces ---


def distillation_loss(
    pred: Tensor, target: Tensor, valid: Tensor, cosine_weight: float
) -> tuple[Tensor, Tensor]:
    """Per target layer (L1, −λ·log σ(cos)) over valid frames: (B, N, T, D) pairs, (B, T) valid → 2 × (N,)."""
    weight = valid[:, None, :].to(pred.dtype)  # (B, 1, T)
    frames = weight.sum().clamp(min=1.0)
    l1 = ((pred - target).abs().mean(-1) * weight).sum((0, 2)) / frames
    cos = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1))
    return l1, cosine_weight * (cos * weight).sum((0, 2)) / frames


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −scale."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def gradient_reversal(x: Tensor, scale: float = 1.0) -> Tensor:
    """`x` unchanged, but the gradient flowing back through it is multiplied by −scale (Ganin & Lempitsky)."""
    return _GradientReversal.apply(x, scale)


class DistortionClassifier(nn.Module):
    """Utterance-level distortion-type classifier: mean over valid frames → Linear → ReLU → Linear."""

    def __init__(self, hidden_size: int, num_types: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_types)
        )

    def forward(self, features: Tensor, valid: Tensor) -> Tensor:
        """(B, T, H) features, (B, T) valid → (B, num_types) logits."""
        weight = valid[..., None].to(features.dtype)
        pooled = (features * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        return self.net(pooled)


def warp_to_student(
    target: Tensor, target_lens: Tensor, student_len: int, ratio: Tensor
) -> tuple[Tensor, Tensor]:
    """Teacher frames (B, T_t, ...) resampled onto the student's timeline: student frame j reads teacher
    position j·ratio (linear interpolation); returns (B, student_len, ...) and the frames inside it."""
    j = torch.arange(student_len, device=target.device, dtype=torch.float64)
    pos = j[None, :] * ratio.double()[:, None]  # (B, T_s)
    last = (target_lens - 1).clamp(min=0).double()[:, None]
    inside = pos <= last + 1e-6
    pos = torch.minimum(pos, last)
    left = pos.floor().long()
    right = torch.minimum(left + 1, last.long())
    frac = (pos - left).to(target.dtype)
    shape = (-1, student_len) + (1,) * (target.dim() - 2)
    gather = lambda idx: target.gather(1, idx.view(shape).expand(-1, -1, *target.shape[2:]))
    warped = gather(left) * (1 - frac.view(shape)) + gather(right) * frac.view(shape)
    return warped, inside


# --- the objective ---


class DistilHuBERTObjective(nn.Module):
    """Student upstream, prediction heads, distortion classifier; the frozen teacher is held, not owned."""

    def __init__(self, upstream: nn.Module, teacher: nn.Module, cfg: Config):
        super().__init__()
        self.upstream, self.cfg = upstream, cfg
        num_teacher = len(teacher.hidden_sizes) - 1
        self.target_layers = list(cfg.target_layers or proportional_layers(num_teacher))
        bad = [i for i in self.target_layers if not 0 <= i <= num_teacher]
        if bad:
            raise ConfigError(
                f"key 'target_layers': {bad} outside the teacher's hidden states 0..{num_teacher}"
            )
        sizes = {teacher.hidden_sizes[i] for i in self.target_layers}
        if len(sizes) != 1:
            raise ConfigError(
                f"key 'target_layers': teacher layers {self.target_layers} differ in width {sizes}"
            )
        if teacher.stride != upstream.stride:
            raise ConfigError(
                f"key 'teacher': stride {teacher.stride} differs from the student's {upstream.stride}"
            )
        # A plain attribute, not a submodule: the teacher is neither trained, checkpointed nor exported.
        object.__setattr__(self, "teacher", teacher.requires_grad_(False).eval())
        self.heads = DistilHuBERTHeads(upstream.hidden_sizes[-1], sizes.pop(), len(self.target_layers))
        self.distorter = Distorter(cfg, upstream.sample_rate) if cfg.distortions else None
        aligned = getattr(upstream, "needs_boundaries", False)
        self.boundaries = BoundarySource(cfg.boundaries) if aligned else None
        self.classifier = (
            DistortionClassifier(upstream.hidden_sizes[-1], len(cfg.distortions))
            if cfg.adversarial_weight > 0
            else None
        )

    def _teacher_layers(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, T_t, D) chosen teacher hidden states and (B,) their valid frames (ordinary tensors)."""
        if next(self.teacher.parameters()).device != wavs.device:
            self.teacher.to(wavs.device)  # outside inference_mode: the weights stay ordinary tensors
        with torch.inference_mode():
            out = self.teacher(wavs, wav_lens)
            layers = torch.stack([out.hidden_states[i] for i in self.target_layers], 1)
        # clones leave inference mode, so autograd may save them for the student's backward
        return layers.clone(), out.lengths.clone()

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        wavs, lens = batch.wavs, batch.wav_lens
        student_wavs, student_lens = wavs, lens
        teacher_wavs, teacher_lens = wavs, lens
        ratio = torch.ones(len(wavs), device=wavs.device)
        kinds: list[int] = []
        if self.distorter is not None:
            # numpy draws seeded from torch's RNG, which the loop checkpoints: resumed runs redraw the same
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            kinds = rng.integers(len(cfg.distortions), size=len(wavs)).tolist()
            student_wavs, student_lens, speed_s = self.distorter.batch(
                wavs, lens, [cfg.distortions[k] for k in kinds], rng
            )
            speed_t = torch.ones_like(speed_s)
            if cfg.teacher_input == "distorted":
                other = rng.integers(len(cfg.distortions), size=len(wavs)).tolist()
                teacher_wavs, teacher_lens, speed_t = self.distorter.batch(
                    wavs, lens, [cfg.distortions[k] for k in other], rng
                )
            ratio = speed_s / speed_t
        target, target_lens = self._teacher_layers(teacher_wavs, teacher_lens)
        if self.boundaries is not None:
            out = self.upstream(student_wavs, student_lens, boundaries=self.boundaries.for_cuts(batch.cuts))
        else:
            out = self.upstream(student_wavs, student_lens)
        if out.frame_times is not None:  # segments repeated onto the frame grid the teacher's frames lie on
            last_only = replace(out, hidden_states=out.hidden_states[-1:])  # the heads read the last layer
            states, lengths = on_frame_grid(last_only, student_lens, self.upstream.frame_geometry)
            out = replace(out, hidden_states=states, lengths=lengths, frame_times=None)
        last = out.hidden_states[-1]
        # time-major warp (B, T, N, D) so frames line up with the student, then back to (B, N, T, D)
        warped, inside = warp_to_student(target.transpose(1, 2), target_lens, last.shape[1], ratio)
        valid = padding_mask(out.lengths, last.shape[1]) & inside
        l1, cos = distillation_loss(self.heads(last), warped.transpose(1, 2), valid, cfg.cosine_weight)
        loss = (l1 + cos).sum()
        scalars = {"distill": float(loss.detach())}
        for layer, a, b in zip(self.target_layers, l1.detach().tolist(), cos.detach().tolist()):
            scalars[f"l1_layer{layer}"], scalars[f"cos_layer{layer}"] = a, b
        if self.classifier is not None:
            logits = self.classifier(
                gradient_reversal(last, cfg.adversarial_weight), padding_mask(out.lengths, last.shape[1])
            )
            labels = torch.tensor(kinds, device=logits.device)
            adv = F.cross_entropy(logits.float(), labels)
            loss = loss + adv
            scalars["adv_loss"] = float(adv.detach())
            scalars["adv_acc"] = float((logits.argmax(-1) == labels).float().mean())
        return loss, scalars


def load_teacher(cfg: Config) -> nn.Module:
    """The teacher upstream; a bare registry name without a checkpoint has random weights (warned)."""
    if cfg.teacher in list_upstreams() and cfg.teacher_checkpoint is None:
        log.warning(
            "teacher %r has random weights (no teacher_checkpoint): the student distils noise", cfg.teacher
        )
    if cfg.teacher_checkpoint is not None:
        return load_upstream(cfg.teacher, cfg.teacher_checkpoint, **cfg.teacher_model)
    return load_upstream(cfg.teacher, **cfg.teacher_model)


def init_student_from_teacher(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy the teacher's CNN, projection, positions and first layers into the student where names and shapes
    agree (the paper's initialisation); returns the copied parameter names."""
    num_layers = len(student.hidden_sizes) - 1
    prefixes = (
        "feature_encoder.", "feature_projection.", "encoder.pos_conv.", "encoder.norm.",  # wav2vec 2.0 family
        "projection.", "feature_mean", "feature_std",  # MelHuBERT
    ) + tuple(f"encoder.layers.{i}." for i in range(num_layers))
    source = teacher.state_dict()
    copied = {
        k: source[k]
        for k, v in student.state_dict().items()
        if k.startswith(prefixes) and k in source and source[k].shape == v.shape
    }
    student.load_state_dict(copied, strict=False)
    return sorted(copied)


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Distil the teacher into a DistilHuBERT student on the unlabeled audio `data`; returns the export."""
    teacher = load_teacher(cfg)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    if cfg.init_from_teacher:
        copied = init_student_from_teacher(upstream, teacher)
        if not copied:
            raise ConfigError(
                f"key 'init_from_teacher': no parameter of {cfg.teacher} fits the student "
                f"(widths differ); set init_from_teacher=false or match the student's config"
            )
        log.info("student initialised from the teacher: %d tensors", len(copied))
    if hasattr(upstream, "set_feature_stats") and not (cfg.init_from_teacher and "feature_mean" in copied):
        set_corpus_statistics(upstream, data, cfg)
    if getattr(upstream.config, "segmentation", "fixed") == "units":
        fit_unit_codebook(upstream, data, cfg.data, cfg.unit_fit_seconds, cfg.train.seed)
    objective = DistilHuBERTObjective(upstream, teacher, cfg)
    return run_pretraining("distilhubert", objective, upstream, cfg, data, run_dir)

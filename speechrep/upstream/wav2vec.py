"""wav2vec (Schneider et al. 2019, https://arxiv.org/abs/1904.05862) and vq-wav2vec (Baevski et al. 2020,
https://arxiv.org/abs/1910.05453): a fully convolutional model of the raw waveform.

Encoder: strided 1-D convolutions (no bias) each followed by group norm with one group (statistics over all
channels and frames of an utterance) and ReLU (GELU in vq-wav2vec); the paper's five layers (kernels 10, 8, 4,
4, 4; strides 5, 4, 2, 2, 2) give 10 ms frames with a 465-sample (~30 ms) field; the large and vq models add
1×1 layers. fairseq then log-compresses the features: log(|z| + 1). Context network ("aggregator"): causal
convolutions of stride 1 (left-padded with k − 1 copies of the first frame), each followed by the same group
norm and activation; the paper's base has 9 layers of kernel 3, wav2vec large and vq-wav2vec 12 layers of
kernels 2..13 with skip connections: x ← (block(x) + x) · √residual_scale, through a bias-free 1×1 projection
when the width changes. vq-wav2vec puts a quantizer between the two: a Gumbel-softmax product quantizer
(G = 2 groups × V = 320 entries, optionally one codebook shared by the groups) or grouped online k-means
(a grouped 1×1 projection with group norm, then the nearest of V entries per group, commitment loss).

Hidden states: index 0 is the aggregator's input (the log-compressed features for wav2vec, the quantized
features for vq-wav2vec), then every aggregator layer's output. Group norm takes its statistics over each
utterance's valid frames only, so a padded batch equals its utterances run one by one; padded frames are
zeroed.
The per-step prediction heads and the loss are pre-training only (`speechrep.pretrain.wav2vec`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import AudioError, CheckpointError, ConfigError
from speechrep.nn.conv_encoder import conv_output_lengths, conv_receptive_field
from speechrep.nn.quantizers import GumbelVectorQuantizer, NearestNeighbourQuantizer, QuantizerOutput
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.registry import register_family, register_upstream

# (channels, kernel, stride) per layer
PAPER_ENCODER: tuple[tuple[int, int, int], ...] = (
    (512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2)
)
LARGE_ENCODER = PAPER_ENCODER + ((512, 1, 1),) * 2  # "two additional linear transformations"
VQ_ENCODER = PAPER_ENCODER + ((512, 1, 1),) * 3
PAPER_AGGREGATOR: tuple[tuple[int, int, int], ...] = ((512, 3, 1),) * 9
LARGE_AGGREGATOR: tuple[tuple[int, int, int], ...] = tuple((512, k, 1) for k in range(2, 14))


@dataclass(frozen=True)
class Wav2VecConfig:
    """Architecture of wav2vec / vq-wav2vec (fairseq's `wav2vec` model); defaults: the paper's base model."""

    conv_layers: tuple[tuple[int, int, int], ...] = PAPER_ENCODER  # encoder (channels, kernel, stride)
    aggregator_layers: tuple[tuple[int, int, int], ...] = PAPER_AGGREGATOR  # context network, stride 1
    skip_connections: bool = False  # aggregator residuals (wav2vec large, vq-wav2vec)
    residual_scale: float = 0.5  # residual sums are multiplied by sqrt(residual_scale)
    log_compression: bool = True  # log(|z| + 1) on the encoder output (fairseq)
    activation: str = "relu"  # "relu" (wav2vec) or "gelu" (vq-wav2vec)
    aggregator_bias: bool = True  # fairseq's `not no_conv_bias`
    zero_pad: bool = False  # aggregator left padding: zeros instead of copies of the first frame
    dropout: float = 0.0  # after each aggregator convolution
    vq_type: str = "none"  # "none", "gumbel" or "kmeans"
    vq_groups: int = 2
    vq_vars: int = 320  # entries per group
    vq_depth: int = 1  # Gumbel logit projection layers (fairseq vq_depth; inner width 2 × channels)
    vq_combine_groups: bool = False  # one codebook shared by all groups
    vq_gamma: float = 0.25  # k-means commitment weight
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.activation not in ("relu", "gelu"):
            raise ConfigError(f"wav2vec activation must be 'relu' or 'gelu', got {self.activation!r}")
        if self.vq_type not in ("none", "gumbel", "kmeans"):
            raise ConfigError(f"wav2vec vq_type must be 'none', 'gumbel' or 'kmeans', got {self.vq_type!r}")
        if any(stride != 1 for _, _, stride in self.aggregator_layers):
            raise ConfigError("wav2vec aggregator layers must have stride 1")
        if not self.conv_layers or not self.aggregator_layers:
            raise ConfigError("wav2vec needs at least one encoder and one aggregator layer")
        if self.vq_type != "none" and self.conv_layers[-1][0] % self.vq_groups:
            raise ConfigError(f"encoder channels {self.conv_layers[-1][0]} must divide by vq_groups "
                              f"{self.vq_groups}")


def masked_group_norm(x: Tensor, valid: Tensor | None, groups: int, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of x (B, C, T) with statistics over the valid frames only (`valid` (B, T) bool), in fp32."""
    dtype, x = x.dtype, x.float()
    if valid is None:
        out = F.group_norm(x, groups, norm.weight.float(), norm.bias.float(), norm.eps)
        return out.to(dtype)
    B, C, T = x.shape
    g = x.view(B, groups, C // groups, T)
    mask = valid[:, None, None, :].float()
    count = (mask.sum(-1, keepdim=True) * (C // groups)).clamp(min=1.0)
    mean = (g * mask).sum((-1, -2), keepdim=True) / count
    var = ((g - mean).square() * mask).sum((-1, -2), keepdim=True) / count
    out = ((g - mean) * torch.rsqrt(var + norm.eps)).view(B, C, T)
    return (out * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]).to(dtype)


class _ConvBlock(nn.Module):
    """Conv1d → group norm (one group) → activation; `causal` left-pads by kernel − 1 frames first."""

    def __init__(self, in_channels: int, spec: tuple[int, int, int], bias: bool, config: Wav2VecConfig,
                 causal: bool):
        super().__init__()
        channels, kernel, stride = spec
        self.kernel, self.causal, self.zero_pad = kernel, causal, config.zero_pad
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=bias)
        self.norm = nn.GroupNorm(1, channels, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout if causal else 0.0)
        self.act = nn.GELU() if config.activation == "gelu" else nn.ReLU()

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        """x (B, C_in, T) → (B, C, T'); `valid` (B, T') marks the real output frames of a padded batch."""
        if self.causal and self.kernel > 1:
            x = F.pad(x, (self.kernel - 1, 0), mode="constant" if self.zero_pad else "replicate")
        x = self.dropout(self.conv(x))
        return self.act(masked_group_norm(x, valid, 1, self.norm))


@register_family
class Wav2Vec(nn.Module):
    """wav2vec / vq-wav2vec upstream (satisfies the Upstream protocol)."""

    family = "wav2vec"
    config_class = Wav2VecConfig
    sample_rate = 16000

    def __init__(self, config: Wav2VecConfig):
        super().__init__()
        self.config = config
        self.receptive_field, self.stride = conv_receptive_field(config.conv_layers)
        blocks, width = [], 1
        for spec in config.conv_layers:
            blocks.append(_ConvBlock(width, spec, False, config, causal=False))
            width = spec[0]
        self.encoder = nn.ModuleList(blocks)
        self.quantizer: nn.Module | None = None
        if config.vq_type == "gumbel":
            act = nn.GELU() if config.activation == "gelu" else nn.ReLU()
            self.quantizer = GumbelVectorQuantizer(
                width, width, config.vq_vars, config.vq_groups, temperature=2.0,
                projection_depth=config.vq_depth, activation=act, shared_codebook=config.vq_combine_groups)
        elif config.vq_type == "kmeans":
            # fairseq: a grouped 1×1 projection and group norm (G groups) before the nearest-entry search
            self.quantizer_projection = nn.Conv1d(width, width, 1, groups=config.vq_groups, bias=False)
            self.quantizer_norm = nn.GroupNorm(config.vq_groups, width, eps=config.norm_eps)
            self.quantizer = NearestNeighbourQuantizer(width, config.vq_vars, config.vq_gamma,
                                                       config.vq_groups, config.vq_combine_groups,
                                                       init_std=0.01)
            # straight-through: the codebook learns from the k-means loss only, never from the hidden states
            self.pretraining_only_parameters = ("quantizer.codebook",)
        blocks, projections = [], nn.ModuleDict()
        self.hidden_sizes = [width]
        for index, spec in enumerate(config.aggregator_layers):
            if config.skip_connections and spec[0] != width:
                projections[str(index)] = nn.Conv1d(width, spec[0], 1, bias=False)
            blocks.append(_ConvBlock(width, spec, config.aggregator_bias, config, causal=True))
            width = spec[0]
            self.hidden_sizes.append(width)
        self.aggregator = nn.ModuleList(blocks)
        self.residual_proj = projections

    @property
    def frame_geometry(self) -> FrameGeometry:
        """The encoder's unpadded conv stack (the causal aggregator reaches further into the past); group
        norm over time makes frames depend on the whole utterance."""
        return FrameGeometry(self.receptive_field, self.stride, frame_local=False)

    def output_lengths(self, wav_lens: Tensor) -> Tensor:
        """Frames produced for each waveform length."""
        return conv_output_lengths(wav_lens, self.config.conv_layers)

    def encode(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms → ((B, T', C) encoder features (log-compressed), (B,) valid frames)."""
        wav_lens = wav_lens.to(wavs.device)
        if wavs.shape[0] and int(wav_lens.min()) < self.receptive_field:
            raise AudioError(f"an utterance has {int(wav_lens.min())} samples, fewer than the "
                             f"{self.receptive_field} one wav2vec frame needs")
        x, lengths = wavs[:, None, :], wav_lens
        padded = bool((wav_lens < wavs.shape[1]).any())
        for block, spec in zip(self.encoder, self.config.conv_layers):
            lengths = conv_output_lengths(lengths, [spec])
            frames = (x.shape[-1] - spec[1]) // spec[2] + 1
            x = block(x, padding_mask(lengths, frames) if padded else None)
        if self.config.log_compression:
            x = torch.log(x.abs() + 1)
        return x.transpose(1, 2), lengths

    def quantize(self, z: Tensor, lengths: Tensor) -> QuantizerOutput | None:
        """The quantizer's output for encoder features z (B, T', C); None for plain wav2vec."""
        if self.quantizer is None:
            return None
        valid = padding_mask(lengths, z.shape[1])
        if self.config.vq_type == "kmeans":
            x = self.quantizer_projection(z.transpose(1, 2))
            partial = bool((lengths < z.shape[1]).any())
            z = masked_group_norm(x, valid if partial else None, self.config.vq_groups,
                                  self.quantizer_norm).transpose(1, 2)
        return self.quantizer(z, valid)

    def aggregate(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """Aggregator input (B, T', C) → every layer's output (B, T', H); padded frames zeroed."""
        valid = padding_mask(lengths, x.shape[1])
        partial = valid if bool((lengths < x.shape[1]).any()) else None
        scale = math.sqrt(self.config.residual_scale)
        h, outputs = x.transpose(1, 2), []
        for index, block in enumerate(self.aggregator):
            residual = h
            h = block(h, partial)
            if self.config.skip_connections:
                if str(index) in self.residual_proj:
                    residual = self.residual_proj[str(index)](residual)
                h = (h + residual) * scale
            outputs.append(h.transpose(1, 2) * valid[..., None])
        return outputs

    def forward_with_quantizer(
        self, wavs: Tensor, wav_lens: Tensor
    ) -> tuple[UpstreamOutput, QuantizerOutput | None]:
        """The upstream output and the quantizer's output (codes, perplexity, loss) for pre-training."""
        z, lengths = self.encode(wavs, wav_lens)
        vq = self.quantize(z, lengths)
        x = z if vq is None else vq.quantized
        x = x * padding_mask(lengths, x.shape[1])[..., None]
        return UpstreamOutput([x, *self.aggregate(x, lengths)], lengths), vq

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """(B, T) float waveforms at 16 kHz, (B,) lengths → aggregator input and every aggregator layer."""
        return self.forward_with_quantizer(wavs, wav_lens)[0]


# --- checkpoint-key conversion ---
# fairseq's `wav2vec` model (fairseq/models/wav2vec/wav2vec.py; the wav2vec_large.pt, vq-wav2vec.pt and
# vq-wav2vec_kmeans.pt releases): {"args": Namespace or "cfg": {"model": ...}, "model": state dict}.
#   feature_extractor.conv_layers.{i}.0.weight           encoder conv (no bias); .2.* GroupNorm(1, C)
#   feature_aggregator.conv_layers.{i}.1.{weight,bias}   aggregator conv after its pad; .3.* GroupNorm(1, C)
#   feature_aggregator.residual_proj.{i}.weight          1×1 skip projections (only where the width changes)
#   vector_quantizer.vars (1, G'·V, d), weight_proj.*    Gumbel (G' = 1 with combine_groups)
#   vector_quantizer.embedding (V, G', d), projection.0.weight, projection.1.{weight,bias}    k-means
#   wav2vec_predictions.project_to_steps.*               pre-training only: dropped

_FAIRSEQ_RULES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"encoder.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.", r"encoder.\1.norm."),
    (r"^feature_aggregator\.conv_layers\.(\d+)\.1\.", r"aggregator.\1.conv."),
    (r"^feature_aggregator\.conv_layers\.(\d+)\.3\.", r"aggregator.\1.norm."),
    (r"^feature_aggregator\.residual_proj\.(\d+)\.", r"residual_proj.\1."),
    (r"^vector_quantizer\.weight_proj\.", r"quantizer.weight_proj."),
    (r"^vector_quantizer\.projection\.0\.", r"quantizer_projection."),
    (r"^vector_quantizer\.projection\.1\.", r"quantizer_norm."),
]
_FAIRSEQ_IGNORED = re.compile(r"^wav2vec_predictions\.")


def is_fairseq_wav2vec(model_cfg: Mapping[str, Any]) -> bool:
    """Whether a fairseq model config describes the 2019 `wav2vec` model (not wav2vec 2.0)."""
    return str(model_cfg.get("arch", model_cfg.get("_name", ""))) == "wav2vec"


def convert_fairseq_state_dict(state: Mapping[str, Tensor], config: Wav2VecConfig) -> dict[str, Tensor]:
    """fairseq `wav2vec` keys → ours; codebooks reshaped, unknown keys kept (the loader reports them)."""
    from speechrep.upstream.wav2vec2 import _rename

    out = _rename({k: v for k, v in state.items() if not k.startswith("vector_quantizer.")
                   or "weight_proj" in k or "projection" in k}, _FAIRSEQ_RULES, _FAIRSEQ_IGNORED)
    for key, value in state.items():
        if key == "vector_quantizer.vars":  # (1, G'·V, d) → (G', V, d)
            out["quantizer.codebook"] = value.reshape(-1, config.vq_vars, value.shape[-1])
        elif key == "vector_quantizer.embedding":  # (V, G', d) → (V, G'·d)
            out["quantizer.codebook"] = value.reshape(value.shape[0], -1)
        elif key.startswith("vector_quantizer.") and "weight_proj" not in key and "projection" not in key:
            out[key] = value  # not ours: reported by name
    return out


def config_from_fairseq(model_cfg: Mapping[str, Any], source: str) -> Wav2VecConfig:
    """A fairseq `wav2vec` config (args Namespace or cfg.model) as ours; missing keys: fairseq defaults."""
    from speechrep.upstream.wav2vec2 import parse_conv_spec

    get = model_cfg.get
    if str(get("aggregator", "cnn")) != "cnn":
        raise ConfigError(f"{source}: wav2vec aggregator={get('aggregator')!r} is not supported (only 'cnn')")
    if get("skip_connections_feat", False):
        raise ConfigError(f"{source}: wav2vec skip_connections_feat=True is not supported")
    if get("non_affine_group_norm", False):
        raise ConfigError(f"{source}: wav2vec non_affine_group_norm=True is not supported")
    vq_type = get("vq_type", "none") or "none"
    vq_dim = int(get("vq_dim", 0) or 0)
    conv = parse_conv_spec(str(get("conv_feature_layers", str(list(PAPER_ENCODER + ((512, 1, 1),) * 3)))))
    if vq_type != "none" and vq_dim not in (0, conv[-1][0]):
        raise ConfigError(f"{source}: wav2vec vq_dim={vq_dim} differs from the encoder width {conv[-1][0]}")
    return Wav2VecConfig(
        conv_layers=conv,
        aggregator_layers=parse_conv_spec(str(get("conv_aggregator_layers", str(list(LARGE_AGGREGATOR))))),
        skip_connections=bool(get("skip_connections_agg", True)),
        residual_scale=float(get("residual_scale", 0.5)),
        log_compression=bool(get("log_compression", True)),
        activation=str(get("activation", "relu")),
        aggregator_bias=not bool(get("no_conv_bias", False)),
        zero_pad=bool(get("agg_zero_pad", False)),
        dropout=float(get("dropout", 0.0)),
        vq_type=str(vq_type),
        vq_groups=int(get("vq_groups", 2)),
        vq_vars=int(get("vq_vars", 320)),
        vq_depth=int(get("vq_depth", 1)),
        vq_combine_groups=bool(get("combine_groups", False)),
        vq_gamma=float(get("vq_gamma", 0.25)),
    )


def from_fairseq(checkpoint: Mapping[str, Any], source: str) -> tuple[Wav2VecConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of a fairseq `wav2vec` / `vq-wav2vec` checkpoint read safely."""
    cfg, args = checkpoint.get("cfg"), checkpoint.get("args")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model_cfg = cfg["model"]
    elif isinstance(args, dict):
        model_cfg = args
    else:
        raise CheckpointError(f"{source}: no model configuration ('cfg' or 'args') in the checkpoint")
    config = config_from_fairseq(model_cfg, source)
    return config, convert_fairseq_state_dict(checkpoint["model"], config)


# --- registered configurations ---

VQ = dict(conv_layers=VQ_ENCODER, aggregator_layers=LARGE_AGGREGATOR, skip_connections=True,
          activation="gelu", vq_groups=2, vq_vars=320, vq_combine_groups=True)
TINY = dict(conv_layers=((32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2)),
            aggregator_layers=((32, 3, 1), (32, 3, 1), (48, 3, 1)), skip_connections=True)


@register_upstream("wav2vec")
def wav2vec(**overrides: Any) -> Wav2Vec:
    """The paper's wav2vec: 5-layer encoder, 9 causal layers of kernel 3 (512 channels), ReLU, no skips."""
    return Wav2Vec(replace(Wav2VecConfig(), **overrides))


@register_upstream("wav2vec_large")
def wav2vec_large(**overrides: Any) -> Wav2Vec:
    """wav2vec large (fairseq's wav2vec_large.pt): 7-layer encoder, 12 layers of kernels 2..13 with skips."""
    return Wav2Vec(replace(Wav2VecConfig(conv_layers=LARGE_ENCODER, aggregator_layers=LARGE_AGGREGATOR,
                                         skip_connections=True), **overrides))


@register_upstream("vq_wav2vec")
def vq_wav2vec(**overrides: Any) -> Wav2Vec:
    """vq-wav2vec, Gumbel (fairseq's vq-wav2vec.pt): G = 2 × V = 320 shared entries, 2-layer logits."""
    return Wav2Vec(replace(Wav2VecConfig(**VQ, vq_type="gumbel", vq_depth=2), **overrides))


@register_upstream("vq_wav2vec_kmeans")
def vq_wav2vec_kmeans(**overrides: Any) -> Wav2Vec:
    """vq-wav2vec, k-means (fairseq's vq-wav2vec_kmeans.pt): G = 2 × V = 320 shared entries, γ = 0.25."""
    return Wav2Vec(replace(Wav2VecConfig(**VQ, vq_type="kmeans"), **overrides))


@register_upstream("wav2vec_tiny")
def wav2vec_tiny(**overrides: Any) -> Wav2Vec:
    """A small wav2vec for tests: 32 channels, three causal layers (the last 48 wide: a skip projection)."""
    return Wav2Vec(replace(Wav2VecConfig(**TINY), **overrides))


@register_upstream("vq_wav2vec_tiny")
def vq_wav2vec_tiny(**overrides: Any) -> Wav2Vec:
    """A small Gumbel vq-wav2vec for tests: 2 groups × 16 shared entries, 2-layer logit projection."""
    return Wav2Vec(replace(Wav2VecConfig(**TINY, activation="gelu", vq_type="gumbel", vq_vars=16, vq_depth=2,
                                         vq_combine_groups=True), **overrides))


@register_upstream("vq_wav2vec_kmeans_tiny")
def vq_wav2vec_kmeans_tiny(**overrides: Any) -> Wav2Vec:
    """A small k-means vq-wav2vec for tests: 2 groups × 16 entries each."""
    config = Wav2VecConfig(**TINY, activation="gelu", vq_type="kmeans", vq_vars=16)
    return Wav2Vec(replace(config, **overrides))

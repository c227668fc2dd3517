"""MelHuBERT (Lin et al., 2023, https://arxiv.org/abs/2211.09944): HuBERT without the CNN. The input is a
40-bin Kaldi log-mel filterbank (Hamming window, 25 ms / 10 ms), standardised with fixed corpus statistics
and, for the 20 ms model, two consecutive frames stacked into one 80-dim vector; a linear projection feeds the
HuBERT Transformer (conv positions, post-LN). Pre-training masks input frames to zero before the projection
and predicts k-means labels of the mel frames.

The corpus mean/std are buffers (identity until a checkpoint or `set_feature_stats` provides them).

Sequence compression (Meng et al., SLT 2022, https://arxiv.org/abs/2210.07189): with `downsample` k > 1 the
projected frames are pooled into about one vector per k frames before the Transformer (k = 2, 3, 4, 5 give
25, 16.7, 12.5 and 10 Hz at 20 ms), by `segmentation`:
- `fixed`: consecutive groups of k frames, averaged (`pooling: average`) or a strided convolution (`conv`);
- `units`: runs of repeated k-means units of the input frames (a codebook of `segment_units` centroids the
  pre-training fits and the export carries), merged or split to ceil(T / k) segments, then averaged;
- `alignment`: segments between given boundaries (phone starts and ends: `forward(..., boundaries=)`),
  merged or split to ceil(T / k), then averaged.
The output then says where each frame lies (`UpstreamOutput.frame_times`); `stride` and `frame_geometry`
stay those of the uncompressed 20 ms grid, which frame-level tasks map back to (`on_frame_grid`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.audio.features import fbank, num_frames
from speechrep.errors import AudioError, CheckpointError, ConfigError
from speechrep.nn.frames import padding_mask, stack_frames
from speechrep.nn.segments import (
    boundary_segment_ids,
    fit_segment_count,
    fixed_segment_ids,
    pad_segment_ids,
    segment_frame_spans,
    segment_means,
    unit_segment_ids,
)
from speechrep.nn.transformer import TransformerEncoder, check_identity_attention, check_layer_sizes
from speechrep.upstream.base import FrameGeometry, UpstreamOutput
from speechrep.upstream.baselines import CorpusStatistics, log_mel_geometry
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import _rename, convert_fairseq_state_dict

logger = logging.getLogger(__name__)


SEGMENTATIONS = ("fixed", "units", "alignment")


@dataclass(frozen=True)
class MelHuBERTConfig:
    """MelHuBERT architecture and input features."""

    num_mel_bins: int = 40
    window_type: str = "hamming"
    stack_frames: int = 2  # 2: 20 ms frames (stride 320); 1: 10 ms (stride 160)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int | tuple[int, ...] = 12  # one value for every layer, or one per layer (0: no attention)
    ffn_size: int | tuple[int, ...] = 3072  # likewise (0: no feed-forward block)
    head_dim: int = 0  # 0: hidden_size // num_heads; set it when pruned heads keep their width
    # 0-based layers whose attention is the identity map, folded into one linear (compress.skip); their
    # num_heads entry is ignored
    identity_attention: tuple[int, ...] = ()
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    layer_drop: float = 0.0
    # sequence compression (see the module docstring); downsample 1 and fixed segmentation: none
    downsample: int = 1
    segmentation: str = "fixed"  # fixed | units | alignment
    pooling: str = "average"  # average | conv (fixed segmentation only)
    segment_units: int = 0  # units segmentation: size of the codebook on the input frames

    def __post_init__(self) -> None:
        if self.downsample < 1:
            raise ConfigError(f"key 'downsample': must be >= 1, got {self.downsample}")
        if self.segmentation not in SEGMENTATIONS:
            raise ConfigError(
                f"key 'segmentation': {self.segmentation!r} is not one of {', '.join(SEGMENTATIONS)}"
            )
        if self.pooling not in ("average", "conv"):
            raise ConfigError(f"key 'pooling': {self.pooling!r} is not 'average' or 'conv'")
        if self.pooling == "conv" and (self.segmentation != "fixed" or self.downsample == 1):
            raise ConfigError("key 'pooling': conv pools fixed segments of downsample > 1 frames only")
        if self.segmentation == "units" and self.segment_units < 2:
            raise ConfigError("key 'segment_units': units segmentation needs a codebook of >= 2 units")
        try:
            check_layer_sizes(self.hidden_size, self.num_layers, self.num_heads, self.ffn_size, self.head_dim)
            identity = check_identity_attention(self.identity_attention, self.num_layers)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "identity_attention", identity)  # sorted ints, also from a JSON list


@register_family
class MelHuBERT(CorpusStatistics, nn.Module):
    """MelHuBERT encoder (Upstream contract): each transformer layer's input and the last output."""

    family = "melhubert"
    config_class = MelHuBERTConfig

    def __init__(self, config: MelHuBERTConfig):
        super().__init__()
        self.config = config
        self.sample_rate = 16000
        self.stride = 160 * config.stack_frames
        self.hidden_sizes = [config.hidden_size] * (config.num_layers + 1)
        self.pretraining_only_parameters = ("encoder.norm",) if config.layer_norm_first else ()
        self.register_feature_stats(config.num_mel_bins)
        self.projection = nn.Linear(config.num_mel_bins * config.stack_frames, config.hidden_size)
        self.encoder = TransformerEncoder(
            config.hidden_size,
            config.num_layers,
            config.num_heads,
            config.ffn_size,
            config.layer_norm_first,
            config.pos_conv_kernel,
            config.pos_conv_groups,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            layer_drop=config.layer_drop,
            eps=config.layer_norm_eps,
            head_dim=config.head_dim or None,
            identity_attention=config.identity_attention,
        )
        self.compressed = config.downsample > 1 or config.segmentation != "fixed"
        self.needs_boundaries = config.segmentation == "alignment"
        if config.pooling == "conv":
            width, k = config.hidden_size, config.downsample
            self.pool = nn.Conv1d(width, width, k, stride=k)
        if config.segmentation == "units":
            self.register_buffer(
                "unit_centroids", torch.zeros(config.segment_units, config.num_mel_bins * config.stack_frames)
            )

    @property
    def frame_geometry(self) -> FrameGeometry:
        """`stack_frames` log-mel frames per output frame (corpus statistics: frame-local); a short tail is
        zero-filled into one last frame. A compressed model's frames are segments: their grid is this one,
        and they are not local (chunked extraction must not stitch them)."""
        return log_mel_geometry(self.stride, frame_local=not self.compressed, zero_filled_tail=True)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms → ((B, T', stack·bins) standardised stacked log-mels, zero-padded; lengths)."""
        wav_lens = wav_lens.to(wavs.device)
        if wavs.shape[0] and int(num_frames(wav_lens.min())) == 0:
            raise AudioError(
                f"an utterance has {int(wav_lens.min())} samples, fewer than one 400-sample frame"
            )
        mels, lengths = fbank(
            wavs, wav_lens, num_mel_bins=self.config.num_mel_bins, window_type=self.config.window_type
        )
        # padding stays zero after standardisation, as the original zero-fills a stacked utterance's odd tail
        mels = self.standardise(mels, lengths)
        return stack_frames(mels, lengths, self.config.stack_frames, tail="pad")

    def segments(
        self, feats: Tensor, lengths: Tensor, boundaries: list[list[float]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """The segmentation of each utterance's input frames: ((B, T) ids padded with -1, (B,) counts).

        `boundaries` (seconds from each utterance's start) are needed by the alignment segmentation."""
        cfg = self.config
        if self.needs_boundaries and boundaries is None:
            raise ConfigError("this MelHuBERT pools frames between phone boundaries (segmentation: "
                              "alignment): give them, forward(..., boundaries=[[seconds ...] per utterance])")
        if boundaries is not None and len(boundaries) != len(lengths):
            raise ConfigError(f"boundaries for {len(boundaries)} utterances, the batch has {len(lengths)}")
        per_utterance = []
        for row, n in enumerate(lengths.tolist()):
            target = -(-n // cfg.downsample)
            if cfg.segmentation == "fixed":
                ids = fixed_segment_ids(n, cfg.downsample)
            elif cfg.segmentation == "units":
                ids = fit_segment_count(unit_segment_ids(self.units(feats[row, :n]).cpu()), target)
            else:
                starts = [round(t * self.sample_rate / self.stride) for t in boundaries[row]]
                ids = fit_segment_count(boundary_segment_ids(starts, n), target)
            per_utterance.append(ids)
        ids, counts = pad_segment_ids(per_utterance, feats.shape[1])
        return ids.to(feats.device), counts.to(lengths.device)

    def units(self, frames: Tensor) -> Tensor:
        """(N, D) input frames → (N,) index of the nearest codebook unit (squared Euclidean distance)."""
        centroids = self.unit_centroids.to(frames.dtype)
        return torch.cdist(frames, centroids).argmin(-1)

    def frame_times(self, ids: Tensor, counts: Tensor) -> Tensor:
        """(B, S, 2) start and end in seconds of each segment: input frame j spans [j, j + 1) · stride."""
        return segment_frame_spans(ids, counts).float() * (self.stride / self.sample_rate)

    def encode(
        self, feats: Tensor, lengths: Tensor, mask_time_indices: Tensor | None = None,
        attentions: list[Tensor] | None = None, segments: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """Stacked log-mels → (hidden states of all layers, final output); masked frames are zeroed first.

        With `segments` (ids, counts) from `segments()`, the projected frames are pooled into one vector
        per segment before the Transformer, so the outputs have `counts` frames. `attentions` (a list)
        receives each layer's attention probabilities."""
        if mask_time_indices is not None:
            feats = feats.masked_fill(mask_time_indices[..., None], 0.0)
        x = self.projection(feats.to(self.projection.weight.dtype))  # fbank is fp32 even in a bf16 model
        if segments is not None:
            x, lengths = self.pool_segments(x, lengths, *segments)
        valid = padding_mask(lengths, x.shape[1]) if bool((lengths < x.shape[1]).any()) else None
        return self.encoder(x, valid, attentions)

    def pool_segments(self, x: Tensor, lengths: Tensor, ids: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H) projected frames → (B, S, H) one vector per segment, and the segment counts."""
        if self.config.pooling == "conv":
            k = self.config.downsample
            x = x * padding_mask(lengths, x.shape[1])[..., None].to(x.dtype)
            x = F.pad(x.transpose(1, 2), (0, (-x.shape[1]) % k))
            return self.pool(x).transpose(1, 2)[:, : int(counts.max())], counts
        return segment_means(x, ids, counts), counts

    def forward(
        self, wavs: Tensor, wav_lens: Tensor, output_attentions: bool = False,
        boundaries: list[list[float]] | None = None,
    ) -> UpstreamOutput:
        """(B, T) float waveforms at 16 kHz, (B,) lengths → every layer's hidden states and valid frames
        (and, with `output_attentions`, each layer's (B, H, T', T') attention probabilities). A compressed
        model also says where each frame lies (`frame_times`); `boundaries` feed the alignment
        segmentation."""
        feats, lengths = self.input_features(wavs, wav_lens)
        attentions: list[Tensor] | None = [] if output_attentions else None
        if not self.compressed:
            hidden_states, _ = self.encode(feats, lengths, attentions=attentions)
            return UpstreamOutput(hidden_states=hidden_states, lengths=lengths, attentions=attentions)
        ids, counts = self.segments(feats, lengths, boundaries)
        hidden_states, _ = self.encode(feats, lengths, attentions=attentions, segments=(ids, counts))
        return UpstreamOutput(hidden_states=hidden_states, lengths=counts, attentions=attentions,
                              frame_times=self.frame_times(ids, counts).to(counts.device))


# --- checkpoint-key conversion ---
# The MelHuBERT release (github.com/nervjack2/MelHuBERT, pretrain_expert.save_model) is {"model": state dict,
# "Upstream_Config": {"melhubert": {...}}, "Optimizer", "Step", ...}. Its encoder uses fairseq's key names;
# the projection is `pre_extract_proj`, the cluster head `final_proj`, a learnable `mask_emb` is optional. The
# corpus mean/std are not in the checkpoint: the repository ships them as example/libri-*-mean-std.npy
# (`read_melhubert_stats`).

_RELEASE_RULES = [(r"^pre_extract_proj\.", "projection.")]
_RELEASE_IGNORED = re.compile(r"^(final_proj|mask_emb$)")


def from_release(checkpoint: dict[str, Any], source: str) -> tuple[MelHuBERTConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of a MelHuBERT release checkpoint; the cluster head is dropped.

    Its input is the same as ours (40 Kaldi log-mel bins of 16-bit-scaled audio, Hamming window, corpus
    standardisation, frames 2t and 2t+1 stacked for 20 ms). Its hidden states start with the projected
    features; ours start with the first layer's input after the positional conv and layer norm."""
    cfg = checkpoint["Upstream_Config"]["melhubert"]
    for key, allowed in (("activation_fn", "gelu"), ("attention_type", "original"), ("pos_emb_type", "conv"),
                         ("pos_conv_depth", 1)):
        if cfg.get(key, allowed) != allowed:
            raise ConfigError(f"{source}: MelHuBERT {key}={cfg[key]!r} is not supported (only {allowed!r})")
    feat_dim, bins = int(cfg.get("feat_emb_dim", 40)), MelHuBERTConfig.num_mel_bins
    if feat_dim % bins:
        raise ConfigError(f"{source}: MelHuBERT feat_emb_dim={feat_dim} is not a multiple of {bins} mel bins")
    config = MelHuBERTConfig(
        stack_frames=feat_dim // bins,
        hidden_size=int(cfg.get("encoder_embed_dim", 768)),
        num_layers=int(cfg.get("encoder_layers", 1)),
        num_heads=int(cfg.get("encoder_attention_heads", 12)),
        ffn_size=int(cfg.get("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(cfg.get("layer_norm_first", False)),
        pos_conv_kernel=int(cfg.get("conv_pos", 128)),
        pos_conv_groups=int(cfg.get("conv_pos_groups", 16)),
        dropout=float(cfg.get("dropout", 0.1)),
        attention_dropout=float(cfg.get("attention_dropout", 0.1)),
        activation_dropout=float(cfg.get("activation_dropout", 0.1)),
        layer_drop=float(cfg.get("encoder_layerdrop", 0.0)),
    )
    state = {key: value for key, value in checkpoint["model"].items() if not _RELEASE_IGNORED.match(key)}
    state = convert_fairseq_state_dict(_rename(state, _RELEASE_RULES, _RELEASE_IGNORED))
    logger.warning("%s: MelHuBERT releases carry no corpus mean/std; set them with model.set_feature_stats("
                   "*read_melhubert_stats(NPY)) from the release's mean-std.npy", source)
    return config, state


def read_melhubert_stats(path: str | Path) -> tuple[Tensor, Tensor]:
    """(mean, std), each (40,), from a MelHuBERT mean-std.npy (a (2, 40) array; no pickled objects read)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable .npy of corpus statistics ({error})") from error
    if array.ndim < 2 or array.shape[0] != 2:
        raise CheckpointError(f"{path}: expected a (2, bins) array of mean and std, got {array.shape}")
    stats = torch.as_tensor(array.reshape(2, -1), dtype=torch.float32)
    return stats[0], stats[1]


@register_upstream("melhubert_base")
def melhubert_base(**overrides: Any) -> MelHuBERT:
    """MelHuBERT Base, 20 ms frames: 12 post-LN layers of width 768 on 2 stacked 40-bin log-mel frames."""
    return MelHuBERT(replace(MelHuBERTConfig(), **overrides))


@register_upstream("melhubert_base_10ms")
def melhubert_base_10ms(**overrides: Any) -> MelHuBERT:
    """MelHuBERT Base, 10 ms frames (no stacking)."""
    return MelHuBERT(replace(MelHuBERTConfig(stack_frames=1), **overrides))


@register_upstream("melhubert_tiny")
def melhubert_tiny(**overrides: Any) -> MelHuBERT:
    """A 2-layer, width-32 MelHuBERT for tests."""
    config = MelHuBERTConfig(
        hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, pos_conv_kernel=16, pos_conv_groups=4
    )
    return MelHuBERT(replace(config, **overrides))

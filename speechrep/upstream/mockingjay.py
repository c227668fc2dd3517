"""Mockingjay, TERA and Audio ALBERT: BERT-style transformer encoders reconstructing altered log-mel.

Mockingjay (Liu et al. 2020, https://arxiv.org/abs/1910.12638): 80-dim log-mel frames stacked ×3 (stride 480,
30 ms per frame), a linear projection + sinusoidal positions + LayerNorm, then post-LN transformer layers
(768, 12 heads, FFN 3072, GELU); pre-training reconstructs masked frames (L1). TERA (Liu et al. 2021,
https://arxiv.org/abs/2007.06028) is the same encoder on unstacked frames (stride 160) trained on time,
frequency and magnitude alteration (`speechrep.pretrain.mockingjay.alter_features`). Audio ALBERT (Chi et al. 2021,
https://arxiv.org/abs/2005.08575) shares one layer's parameters across all layers. Hidden states: the
embedding output, then one per layer. Frames = (1 + (samples − 400) // 160) // downsample.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import CheckpointError, ConfigError
from speechrep.nn.frames import padding_mask, stack_frames
from speechrep.nn.transformer import SelfAttention, prepend_prefix, prompt_input, valid_with
from speechrep.upstream.base import FrameGeometry, UpstreamOutput
from speechrep.upstream.baselines import (
    HOP,
    SAMPLE_RATE,
    CorpusStatistics,
    log_mel_features,
    log_mel_geometry,
    require_one_frame,
)
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import _rename


@dataclass(frozen=True)
class MockingjayConfig:
    """Architecture of the Mockingjay / TERA / Audio ALBERT encoders."""

    num_mel_bins: int = 80
    downsample: int = 1  # consecutive frames stacked into one input vector
    hidden_size: int = 768
    num_layers: int = 3
    num_heads: int = 12
    ffn_size: int = 3072
    dropout: float = 0.1
    share_layers: bool = False  # Audio ALBERT
    corpus_norm: bool = False  # standardise log-mel with corpus statistics (buffers), not per utterance


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) fixed sinusoidal position encodings (Vaswani et al. 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)
    return enc


class _PostLNLayer(nn.Module):
    """BERT encoder layer: x = LN(x + MHSA(x)); x = LN(x + FFN(x))."""

    def __init__(self, c: MockingjayConfig):
        super().__init__()
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(c.hidden_size, c.ffn_size), nn.GELU(), nn.Dropout(c.dropout),
                                 nn.Linear(c.ffn_size, c.hidden_size))
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(c.dropout)
        self.attn_dropout = c.dropout

    def forward(self, x: Tensor, key_mask: Tensor, attentions: list[Tensor] | None = None,
                prefix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, H); key_mask (B, T) True on valid frames; `attentions` (a list) receives the maps; `prefix`
        (keys, values), each (P, H): learned positions every query also attends to, never masked (as in
        `SelfAttention`)."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        if prefix is not None:
            k, v = prepend_prefix(k, v, prefix)
            key_mask = valid_with(key_mask, prefix[0].shape[0])
        dropout = self.attn_dropout if self.training else 0.0
        if attentions is None:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                               dropout_p=dropout)
        else:  # explicit probabilities, only on request
            weights = SelfAttention.attention_weights(q, k, key_mask[:, None, None, :])
            attentions.append(weights)
            a = F.dropout(weights, dropout, training=self.training) @ v
        x = self.attn_norm(x + self.dropout(self.out(a.transpose(1, 2).flatten(2))))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


@register_family
class Mockingjay(CorpusStatistics, nn.Module):
    """Mockingjay / TERA / Audio ALBERT upstream (satisfies the Upstream protocol)."""

    family = "mockingjay"
    config_class = MockingjayConfig
    sample_rate = SAMPLE_RATE

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        c = self.config = config
        self.stride = HOP * c.downsample
        self.input_proj = nn.Linear(c.num_mel_bins * c.downsample, c.hidden_size)
        self.input_norm = nn.LayerNorm(c.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(_PostLNLayer(c) for _ in range(1 if c.share_layers else c.num_layers))
        self.hidden_sizes = [c.hidden_size] * (c.num_layers + 1)
        # learned positions in front of the layers' input, set by prompt tuning (`speechrep.tuning.prompts`):
        # (P, H) or (num_layers, P, H) as `prompt_input` takes them; none (no parameter, no state) by default
        self.register_parameter("prompts", None)
        if c.corpus_norm:
            self.register_feature_stats(c.num_mel_bins)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """`downsample` stacked log-mel frames per output frame; a short tail is dropped."""
        return log_mel_geometry(self.stride, frame_local=self.config.corpus_norm)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel (B, T', 80·downsample), standardised (per utterance, or with the corpus statistics when
        `corpus_norm`), stacked by `downsample`, with lengths."""
        require_one_frame(wav_lens, self.frame_geometry, self.family)
        corpus_norm = self.config.corpus_norm
        feats, lengths = log_mel_features(wavs, wav_lens, self.config.num_mel_bins, cmvn=not corpus_norm)
        if corpus_norm:
            feats = self.standardise(feats, lengths)
        # as the original: a tail shorter than `downsample` frames is cut
        return stack_frames(feats, lengths, self.config.downsample, tail="drop")

    def forward_features(
        self, feats: Tensor, lengths: Tensor, output_attentions: bool = False
    ) -> UpstreamOutput:
        """Hidden states from (possibly altered) stacked log-mel features, as pre-training feeds them.

        With `prompts` set, the layers see them in front of the frames (never masked); the returned states
        leave them out, the attention maps keep them (P + T rows and columns, the prompts first)."""
        mask = padding_mask(lengths, feats.shape[1])
        keep = mask[..., None].to(feats.dtype)
        positions = sinusoidal_positions(feats.shape[1], self.config.hidden_size, feats.device)
        x = self.input_proj(feats) + positions
        x = self.dropout(self.input_norm(x)) * keep
        states = [x]
        attentions: list[Tensor] | None = [] if output_attentions else None
        count = 0 if self.prompts is None else self.prompts.shape[-2]
        if count:
            mask = valid_with(mask, count)
            keep = mask[..., None].to(feats.dtype)
        for i in range(self.config.num_layers):
            if self.prompts is not None:
                x = prompt_input(x, self.prompts, i)
            x = self.layers[0 if self.config.share_layers else i](x, mask, attentions) * keep
            states.append(x[:, count:] if count else x)
        return UpstreamOutput(states, lengths, attentions)

    def forward(self, wavs: Tensor, wav_lens: Tensor, output_attentions: bool = False) -> UpstreamOutput:
        """Embedding output and every layer's hidden states for padded 16 kHz waveforms (and, with
        `output_attentions`, each layer's (B, H, T', T') attention probabilities)."""
        feats, lengths = self.input_features(wavs, wav_lens)
        return self.forward_features(feats, lengths, output_attentions=output_attentions)


class SpecHead(nn.Module):
    """Pre-training only: reconstructs the (stacked) log-mel input from the last hidden state."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        h = config.hidden_size
        self.net = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=1e-12),
                                 nn.Linear(h, config.num_mel_bins * config.downsample))

    def forward(self, last_hidden: Tensor) -> Tensor:
        """(B, T', H) → (B, T', num_mel_bins · downsample)."""
        return self.net(last_hidden)


# --- checkpoint-key conversion ---
# S3PRL's Mockingjay / TERA / Audio ALBERT releases (s3prl/upstream/{mockingjay,tera,audio_albert}) are
# {"Transformer": state dict, "SpecHead": state dict (pre-training only), "Config" or "Upstream_Config":
# {"transformer": {hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
# layer_norm_eps, share_layer, pre_layer_norm, ...}, "audio": {...}, "task": {...}}, "Optimizer", ...}.
# Keys follow BERT: input_representations.{spec_transform,LayerNorm}, encoder.layer.{i}.attention.self.
# {query,key,value}, .attention.output.{dense,LayerNorm}, .intermediate.dense, .output.{dense,LayerNorm};
# old files name LayerNorm parameters gamma/beta. With share_layer every layer index repeats layer 0's
# tensors.

_S3PRL_RULES = [
    (r"^input_representations\.spec_transform\.", "input_proj."),
    (r"^input_representations\.LayerNorm\.", "input_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn.0."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn.3."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
]
_S3PRL_IGNORED = re.compile(r"^$")  # the Transformer state holds no pre-training parts (SpecHead is apart)
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def _s3prl_input(config: dict[str, Any], input_dim: int, source: str) -> tuple[int, int]:
    """(mel bins, frames stacked) from an S3PRL transformer config and the input projection's width."""
    audio, transformer = dict(config.get("audio") or {}), config["transformer"]
    if "kaldi" in audio:
        kaldi = audio["kaldi"]
        feat_type = str(kaldi.get("feat_type", "fbank"))
        order = int((audio.get("delta") or {}).get("order", 2))
        if feat_type != "fbank" or order or not (audio.get("cmvn") or {}).get("use_cmvn", False):
            raise ConfigError(f"{source}: Kaldi {feat_type} input with delta order {order} is not supported "
                              "or without CMVN (only fbank, no deltas, CMVN)")
        bins = int(kaldi.get("fbank", {}).get("num_mel_bins", 23))
    elif audio:
        feat = dict(audio.get("input") or {})
        if (str(feat.get("feat_type", "mel")) != "mel" or not feat.get("log", True) or feat.get("delta", 0)
                or not feat.get("cmvn", True)):
            raise ConfigError(f"{source}: input {feat} is not supported (only log mel, no deltas, CMVN)")
        bins = int(audio.get("n_mels", 80))
    else:  # pre-extracted features: taken as log-mel of the projection's width
        bins = int(transformer.get("input_dim", input_dim))
        bins = bins if bins > 0 else input_dim
    downsample = int(transformer.get("downsample_rate", input_dim // bins if bins else 0) or 1)
    if bins * downsample != input_dim:
        raise ConfigError(f"{source}: input width {input_dim} is not {bins} mel bins x {downsample} frames")
    return bins, downsample


def from_s3prl(checkpoint: dict[str, Any], source: str) -> tuple[MockingjayConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of an S3PRL Mockingjay / TERA / Audio ALBERT release.

    The hidden states are the release's (the embedding output, then every layer's). The front end is ours:
    Kaldi log-mel with per-utterance CMVN. Releases trained on S3PRL's torchaudio features (Hann-window STFT
    mel, waveforms scaled to -25 dB; most TERA and Mockingjay files) therefore see slightly different input
    features than in training; Kaldi-fbank releases differ only in CMVN's epsilon (1e-10 on the unbiased std
    there, 1e-5 on the biased variance here)."""
    config = dict(checkpoint.get("Config") or {})
    if "transformer" not in config:
        config = dict(checkpoint["Upstream_Config"])
    t = config["transformer"]
    for key, value in (("hidden_act", "gelu"), ("pre_layer_norm", False), ("layer_norm_eps", 1e-12)):
        if t.get(key, value) != value:
            raise ConfigError(f"{source}: transformer {key}={t[key]!r} is not supported (only {value!r})")
    state: dict[str, Tensor] = {}
    for key, value in checkpoint["Transformer"].items():
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
        state[key] = value
    width = state.get("input_representations.spec_transform.weight")
    if width is None:
        raise CheckpointError(f"{source}: no input_representations.spec_transform.weight in 'Transformer'")
    bins, downsample = _s3prl_input(config, int(width.shape[1]), source)
    share = bool(t.get("share_layer", False))
    mj_config = MockingjayConfig(
        num_mel_bins=bins, downsample=downsample, hidden_size=int(t["hidden_size"]),
        num_layers=int(t["num_hidden_layers"]), num_heads=int(t["num_attention_heads"]),
        ffn_size=int(t["intermediate_size"]), dropout=float(t.get("hidden_dropout_prob", 0.1)),
        share_layers=share,
    )
    return mj_config, _convert_s3prl_layers(state, share)


def _convert_s3prl_layers(state: dict[str, Tensor], share: bool) -> dict[str, Tensor]:
    """Rename, merge query/key/value into qkv and, for shared layers, keep layer 0 (the other indices are
    dropped only when they repeat its tensors; otherwise they stay and are reported)."""
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    rest: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _QKV.match(key)
        if match:
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = value
        else:
            rest[key] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:
            rest[f"layers.{layer}.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:  # incomplete: keep the release's names so the misfit is reported by them
            rest.update({f"encoder.layer.{layer}.attention.self.{p}.{kind}": v for p, v in parts.items()})
    out = _rename(rest, _S3PRL_RULES, _S3PRL_IGNORED)
    if share:
        for key in [k for k in out if re.match(r"^layers\.[1-9]\d*\.", k)]:
            first = re.sub(r"^layers\.\d+\.", "layers.0.", key)
            if first in out and torch.equal(out[first], out[key]):
                del out[key]
    return out


@register_upstream("mockingjay")
def mockingjay(**overrides: Any) -> Mockingjay:
    """Mockingjay: 12 layers × 768 on 80 log-mel stacked ×3 (stride 480)."""
    return Mockingjay(replace(MockingjayConfig(num_layers=12, downsample=3), **overrides))


@register_upstream("mockingjay_tiny")
def mockingjay_tiny(**overrides: Any) -> Mockingjay:
    """A small Mockingjay (frame stacking ×3) for tests."""
    return Mockingjay(replace(MockingjayConfig(num_layers=2, downsample=3, hidden_size=32, num_heads=4,
                                               ffn_size=64), **overrides))


@register_upstream("tera_base")
def tera_base(**overrides: Any) -> Mockingjay:
    """TERA base: 3 layers × 768 on unstacked 80 log-mel (stride 160, ≈21.3M parameters)."""
    return Mockingjay(replace(MockingjayConfig(num_layers=3, downsample=1), **overrides))


@register_upstream("tera_tiny")
def tera_tiny(**overrides: Any) -> Mockingjay:
    """A small TERA for tests."""
    return Mockingjay(replace(MockingjayConfig(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64),
                              **overrides))


@register_upstream("audio_albert")
def audio_albert(**overrides: Any) -> Mockingjay:
    """Audio ALBERT: one 768-wide layer shared across 6 layers, unstacked 80 log-mel (stride 160)."""
    return Mockingjay(replace(MockingjayConfig(num_layers=6, share_layers=True), **overrides))


@register_upstream("audio_albert_tiny")
def audio_albert_tiny(**overrides: Any) -> Mockingjay:
    """A small Audio ALBERT for tests."""
    return Mockingjay(replace(MockingjayConfig(num_layers=3, share_layers=True, hidden_size=32, num_heads=4,
                                               ffn_size=64), **overrides))

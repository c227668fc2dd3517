"""APC and VQ-APC: autoregressive predictive coding on log-mel.

APC (Chung et al. 2019, https://arxiv.org/abs/1904.03240): a unidirectional 3-layer GRU (512) with residual
connections between GRU layers reads 80-dim log-mel frames (per-utterance CMVN, or corpus statistics with
`corpus_norm`) and, through a linear postnet, predicts the frame `n_future` steps ahead under an L1 loss.
VQ-APC (Chung et al. 2020, https://arxiv.org/abs/2005.08392) quantizes the last GRU layer with a
Gumbel-softmax VQ layer (512 codes) before the postnet. The GRU reads log-mel directly (no input projection,
as in the paper), so the hidden states are the outputs of the GRU layers, all 512-dim (VQ-APC adds a fourth:
the quantized last layer), one per frame: stride 160, frames = 1 + (samples − 400) // 160. The postnet is
pre-training only (`APCHead`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.quantizers import GumbelVectorQuantizer, QuantizerOutput
from speechrep.nn.rnn import RNNStack
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
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
class APCConfig:
    """Architecture of APC / VQ-APC."""

    num_mel_bins: int = 80
    hidden_size: int = 512
    num_layers: int = 3
    residual: bool = True
    dropout: float = 0.1
    n_future: int = 3  # pre-training: predict the frame this many steps ahead
    vq_codebook_size: int = 0  # VQ-APC: entries per group of the VQ layer on the last GRU layer (0: APC)
    vq_groups: int = 1
    vq_temperature: float = 0.5
    corpus_norm: bool = False  # standardise log-mel with corpus statistics (buffers), not per utterance
    window_type: str = "povey"  # Kaldi fbank window; S3PRL's releases use "hamming"


@register_family
class APC(CorpusStatistics, nn.Module):
    """APC / VQ-APC upstream (satisfies the Upstream protocol)."""

    family = "apc"
    config_class = APCConfig
    sample_rate = SAMPLE_RATE
    stride = HOP

    def __init__(self, config: APCConfig):
        super().__init__()
        self.config = config
        self.rnn = RNNStack(config.num_mel_bins, config.hidden_size, config.num_layers, "gru",
                            residual=config.residual, dropout=config.dropout)
        self.vq = (GumbelVectorQuantizer(config.hidden_size, config.hidden_size, config.vq_codebook_size,
                                         groups=config.vq_groups, temperature=config.vq_temperature,
                                         grouped_input=True)
                   if config.vq_codebook_size else None)
        self.hidden_sizes = [config.hidden_size] * (config.num_layers + (self.vq is not None))
        if config.corpus_norm:
            self.register_feature_stats(config.num_mel_bins)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """One 25 ms log-mel frame per output frame (per-utterance CMVN unless `corpus_norm`)."""
        return log_mel_geometry(self.stride, frame_local=self.config.corpus_norm)

    def input_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel input (B, T', 80), standardised per utterance (or with the corpus statistics when
        `corpus_norm`), and its frame lengths."""
        require_one_frame(wav_lens, self.frame_geometry, self.family)
        corpus_norm = self.config.corpus_norm
        feats, lengths = log_mel_features(wavs, wav_lens, self.config.num_mel_bins, cmvn=not corpus_norm,
                                          window_type=self.config.window_type)
        return (self.standardise(feats, lengths) if corpus_norm else feats), lengths

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[UpstreamOutput, QuantizerOutput | None]:
        """Hidden states from log-mel features, plus the VQ layer's output (codes, perplexity) for VQ-APC."""
        states, vq = self.rnn(feats, lengths), None
        if self.vq is not None:
            mask = padding_mask(lengths, feats.shape[1])
            vq = self.vq(states[-1], mask)
            states.append(vq.quantized * mask[..., None])
        return UpstreamOutput(states, lengths), vq

    def forward_features(self, feats: Tensor, lengths: Tensor) -> UpstreamOutput:
        """Hidden states from precomputed log-mel features (B, T', num_mel_bins)."""
        return self.encode(feats, lengths)[0]

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Hidden states of every GRU layer for a padded batch of 16 kHz waveforms."""
        return self.forward_features(*self.input_features(wavs, wav_lens))


class APCHead(nn.Module):
    """Pre-training only: postnet predicting the frame `n_future` ahead from the last (quantized) state."""

    def __init__(self, config: APCConfig):
        super().__init__()
        self.n_future = config.n_future
        self.postnet = nn.Linear(config.hidden_size, config.num_mel_bins)

    def loss(self, last_hidden: Tensor, feats: Tensor, lengths: Tensor) -> Tensor:
        """Mean L1 between predictions at t and the input frames at t + n_future, valid pairs only."""
        n = self.n_future
        pred, target = self.postnet(last_hidden[:, :-n]), feats[:, n:]
        mask = padding_mask((lengths - n).clamp(min=0), pred.shape[1])[..., None]
        err = F.l1_loss(pred, target, reduction="none") * mask
        return err.sum() / (mask.sum() * feats.shape[-1]).clamp(min=1)


# --- checkpoint-key conversion ---
# S3PRL's APC / VQ-APC releases (apc_360hr.ckpt, vq_apc_360hr.ckpt, ...; s3prl/upstream/apc) are
# {"model": state dict, "config": {"model": {"paras": {num_layers, hidden_size, dropout, residual, vq?}},
# "data": {"audio": {feat_type, feat_dim, frame_length, frame_shift, cmvn, ...}}, "task": {n_future, ...}}}
# (newer ones repeat the config as "Upstream_Config"). Keys: rnn_layers.{i}.{weight,bias}_{ih,hh}_l0, the VQ
# groups vq_layers.{g}.vq_logits (Linear code_dim → codebook_size) and vq_layers.{g}.codebook_CxE (Linear
# codebook_size → code_dim, no bias), and the postnet (pre-training only, dropped).

_S3PRL_RULES = [(r"^rnn_layers\.(\d+)\.", r"rnn.layers.\1.")]
_S3PRL_IGNORED = re.compile(r"^postnet\.")


def s3prl_mel_options(audio: dict[str, Any], source: str) -> int:
    """Mel bins of an S3PRL APC/NPC `data.audio` config, after checking it is what our front end computes:
    Kaldi fbank, 25/10 ms frames, per-utterance CMVN (the window is set to Hamming by the caller)."""
    if str(audio.get("feat_type", "fbank")) != "fbank" or not audio.get("cmvn", True):
        raise ConfigError(f"{source}: only fbank input with utterance CMVN is supported, got "
                          f"feat_type={audio.get('feat_type')!r}, cmvn={audio.get('cmvn')!r}")
    if float(audio.get("frame_length", 25)) != 25 or float(audio.get("frame_shift", 10)) != 10:
        raise ConfigError(f"{source}: only 25 ms / 10 ms frames are supported")
    return int(audio.get("feat_dim", 80))


def s3prl_vq_groups(vq: dict[str, Any], hidden_size: int, source: str) -> tuple[int, int, float]:
    """(groups, codes per group, temperature) of an S3PRL VQ config; every group must have the same sizes."""
    sizes, dims = list(vq.get("codebook_size", [])), list(vq.get("code_dim", []))
    if not sizes or len(set(sizes)) != 1 or len(set(dims)) != 1 or len(sizes) != len(dims) or \
            sum(dims) != hidden_size:
        raise ConfigError(f"{source}: VQ groups must share one codebook size and code dim summing to "
                          f"{hidden_size}; got codebook_size={sizes}, code_dim={dims}")
    return len(sizes), int(sizes[0]), float(vq.get("gumbel_temperature", 0.5))


def convert_s3prl_vq(state: dict[str, Tensor], prefix: str, groups: int) -> dict[str, Tensor]:
    """S3PRL's per-group VQ layers (`{prefix}.{g}.vq_logits`, `.codebook_CxE`) → our grouped quantizer."""
    out = {key: value for key, value in state.items() if not key.startswith(prefix + ".")}
    names = [f"{prefix}.{g}.{part}" for g in range(groups)
             for part in ("vq_logits.weight", "vq_logits.bias", "codebook_CxE.weight")]
    if all(name in state for name in names):
        out["vq.weight_proj.weight"] = torch.stack([state[f"{prefix}.{g}.vq_logits.weight"].T
                                                    for g in range(groups)])
        out["vq.weight_proj.bias"] = torch.cat([state[f"{prefix}.{g}.vq_logits.bias"] for g in range(groups)])
        out["vq.codebook"] = torch.stack([state[f"{prefix}.{g}.codebook_CxE.weight"].T
                                          for g in range(groups)])
        leftover = set(state) - set(names)
    else:  # incomplete: keep the release's names so the misfit is reported by them
        leftover = set(state)
    out.update({key: state[key] for key in leftover if key.startswith(prefix + ".")})
    return out


def from_s3prl(checkpoint: dict[str, Any], source: str) -> tuple[APCConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of an S3PRL APC / VQ-APC release; the postnet is dropped.

    Our front end differs slightly from S3PRL's: per-utterance CMVN divides by the biased std + 1e-5 inside
    the square root (S3PRL: unbiased std + 1e-10), and the waveform is scaled to 16-bit range, which CMVN
    cancels except at the log floor. S3PRL returns the three GRU layers' outputs; VQ-APC adds our fourth
    state, the quantized last layer."""
    config = checkpoint["config"]
    paras, audio = dict(config["model"]["paras"]), dict(config.get("data", {}).get("audio", {}))
    hidden = int(paras.get("hidden_size", 512))
    values: dict[str, Any] = dict(
        num_mel_bins=s3prl_mel_options(audio, source), hidden_size=hidden,
        num_layers=int(paras.get("num_layers", 3)), residual=bool(paras.get("residual", True)),
        dropout=float(paras.get("dropout", 0.1)), window_type="hamming",
    )
    if "n_future" in config.get("task", {}):
        values["n_future"] = int(config["task"]["n_future"])
    if paras.get("vq"):
        groups, codes, temperature = s3prl_vq_groups(paras["vq"], hidden, source)
        values.update(vq_codebook_size=codes, vq_groups=groups, vq_temperature=temperature)
    state = _rename(checkpoint["model"], _S3PRL_RULES, _S3PRL_IGNORED)
    return APCConfig(**values), convert_s3prl_vq(state, "vq_layers", values.get("vq_groups", 1))


@register_upstream("apc")
def apc(**overrides: Any) -> APC:
    """APC: 3-layer residual GRU 512 on 80 log-mel (the paper's configuration, 4.06M parameters)."""
    return APC(replace(APCConfig(), **overrides))


@register_upstream("apc_tiny")
def apc_tiny(**overrides: Any) -> APC:
    """A small APC for tests."""
    return APC(replace(APCConfig(num_mel_bins=80, hidden_size=32, num_layers=2), **overrides))


@register_upstream("vq_apc")
def vq_apc(**overrides: Any) -> APC:
    """VQ-APC: APC with a 512-code Gumbel VQ layer on the last GRU layer, predicting 5 frames ahead."""
    return APC(replace(APCConfig(vq_codebook_size=512, n_future=5), **overrides))


@register_upstream("vq_apc_tiny")
def vq_apc_tiny(**overrides: Any) -> APC:
    """A small VQ-APC (two 8-code groups) for tests."""
    return APC(replace(APCConfig(hidden_size=32, num_layers=2, vq_codebook_size=8, vq_groups=2), **overrides))

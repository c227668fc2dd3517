"""Modified CPC (Rivière et al. 2020, https://arxiv.org/abs/2002.02848): the CPC of ZeroSpeech 2021, SUPERB.

Waveform → 5 strided 1-D convolutions (kernels 10, 8, 4, 4, 4; strides 5, 4, 2, 2, 2: 160 samples, 10 ms per
frame) each followed by channel-wise LayerNorm ("ChannelNorm", replacing the batch norm of the original CPC)
and ReLU → a unidirectional LSTM. The raw waveform is used as is (no normalisation), as in the reference.
Hidden states: the encoder output, then one per LSTM layer. Frames follow the conv arithmetic:
each layer maps n → (n + 2·pad − kernel) // stride + 1, which composes to frames = (samples + 1) // 160.
The per-step prediction networks and the InfoNCE loss are pre-training only (`CPCHead`).
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
from speechrep.nn.conv_encoder import conv_receptive_field
from speechrep.nn.rnn import RNNStack
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec2 import _rename

# (kernel, stride, padding) of the encoder layers
CPC_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((10, 5, 3), (8, 4, 2), (4, 2, 1), (4, 2, 1), (4, 2, 1))


@dataclass(frozen=True)
class CPCConfig:
    """Architecture of modified CPC."""

    hidden_size: int = 256  # encoder channels and LSTM size
    num_lstm_layers: int = 1
    conv_layers: tuple[tuple[int, int, int], ...] = CPC_CONV_LAYERS


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each frame of a (B, C, T) tensor, with a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x (B, C, T) along C."""
        # unbiased variance, as the reference implementation, so converted weights give the same outputs
        mean = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


@register_family
class CPC(nn.Module):
    """Modified CPC upstream (satisfies the Upstream protocol)."""

    family = "cpc"
    config_class = CPCConfig
    sample_rate = 16000

    def __init__(self, config: CPCConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.stride = math.prod(s for _, s, _ in config.conv_layers)
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else h, h, k, stride=s, padding=p)
                                   for i, (k, s, p) in enumerate(config.conv_layers))
        self.norms = nn.ModuleList(ChannelNorm(h) for _ in config.conv_layers)
        self.lstm = RNNStack(h, h, config.num_lstm_layers, "lstm")
        self.hidden_sizes = [h] * (config.num_lstm_layers + 1)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """A (kernel, stride, padding) conv stack padded on both sides; channel norm is per frame."""
        layers = self.config.conv_layers
        field, _ = conv_receptive_field([(0, kernel, stride) for kernel, stride, _ in layers])
        offset, jump = 0, 1
        for _, stride, padding in layers:
            offset += padding * jump
            jump *= stride
        return FrameGeometry(field, jump, offset, offset)

    def output_lengths(self, wav_lens: Tensor) -> Tensor:
        """Frames produced by the conv encoder for each waveform length."""
        n = wav_lens
        for k, s, p in self.config.conv_layers:
            n = torch.div(n + 2 * p - k, s, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def encode(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Conv encoder output (B, T', H) and its lengths; frames past each length are zeroed per layer."""
        x, n = wavs[:, None, :] * padding_mask(wav_lens, wavs.shape[1])[:, None, :], wav_lens
        for conv, norm, (k, s, p) in zip(self.convs, self.norms, self.config.conv_layers):
            n = (torch.div(n + 2 * p - k, s, rounding_mode="floor") + 1).clamp(min=0)
            x = torch.relu(norm(conv(x)))
            # zeroing padded frames makes the next conv see exactly the zero padding a lone utterance gets
            x = x * padding_mask(n, x.shape[-1])[:, None, :]
        return x.transpose(1, 2), n

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Encoder output and every LSTM layer's hidden states for padded 16 kHz waveforms."""
        z, lengths = self.encode(wavs, wav_lens)
        return UpstreamOutput([z, *self.lstm(z, lengths)], lengths)


class _CausalTransformerLayer(nn.Module):
    """One post-LN transformer layer whose frame t attends to frames ≤ t (a CPC prediction network)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, D) → (B, T, D); causality also keeps padding (always in the future) out of real frames."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        x = self.norm1(x + self.out(a))
        return self.norm2(x + self.ffn(x))


class CPCHead(nn.Module):
    """Pre-training only: modified CPC's per-step predictors (one causal transformer layer each) and InfoNCE.

    For each step k = 1..n_predicts the context at t predicts the encoder output at t + k; the score of a
    candidate is the mean of the elementwise product; negatives are `n_negatives` encoder frames drawn
    uniformly from the valid frames of the batch, the same draw for every k.
    """

    def __init__(self, config: CPCConfig, n_predicts: int = 12, n_negatives: int = 128, num_heads: int = 8):
        super().__init__()
        self.n_negatives = n_negatives
        self.predictors = nn.ModuleList(_CausalTransformerLayer(config.hidden_size, num_heads)
                                        for _ in range(n_predicts))

    def forward(self, context: Tensor, encoded: Tensor, lengths: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Mean InfoNCE loss over steps and the per-step accuracy (n_predicts,) of picking the true frame."""
        B, T, H = encoded.shape
        valid = padding_mask(lengths, T)
        pool = valid.flatten().nonzero().squeeze(1)
        draw = torch.randint(len(pool), (B, T, self.n_negatives), generator=generator, device=pool.device)
        negatives = encoded.flatten(0, 1)[pool[draw]]  # (B, T, N, H)
        losses, accuracies = [], []
        for k, predictor in enumerate(self.predictors, start=1):
            if T <= k:
                break
            pred = predictor(context)[:, : T - k]
            candidates = torch.cat([encoded[:, k:, None], negatives[:, : T - k]], dim=2)
            logits = (pred[:, :, None] * candidates).mean(-1)[valid[:, k:]]  # (frames, 1 + N)
            target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
            losses.append(F.cross_entropy(logits, target))
            accuracies.append((logits.argmax(-1) == 0).float().mean())
        return torch.stack(losses).mean(), torch.stack(accuracies).detach()


# --- checkpoint-key conversion ---
# Modified CPC (facebookresearch/CPC_audio; the S3PRL / Libri-light and ZeroSpeech 2021 releases)
# is {"weights": state dict, "config": the training arguments (hiddenEncoder, hiddenGar, nLevelsGRU, arMode,
# normMode, encoder_type, ...)}; CPC_audio's own checkpoints hold {"gEncoder": state dict, "cpcCriterion",
# "optimizer", "best"} with the arguments in a separate checkpoint_args.json. Keys: gEncoder.conv{i},
# gEncoder.batchNorm{i} (ChannelNorm, weight/bias (1, C, 1)), gAR.baseNet.{weight,bias}_{ih,hh}_l{k} (one
# multi-layer LSTM); the criterion (prediction networks) is pre-training only.

_RELEASE_RULES = [
    (r"^gEncoder\.conv(\d+)\.", r"convs.\1."),
    (r"^gEncoder\.batchNorm(\d+)\.", r"norms.\1."),
    (r"^gAR\.baseNet\.((?:weight|bias)_(?:ih|hh))_l(\d+)$", r"lstm.layers.\2.\1_l0"),
]
_RELEASE_IGNORED = re.compile(r"^(cpcCriterion|criterion)\.")


def from_release(checkpoint: dict[str, Any], source: str) -> tuple[CPCConfig, dict[str, Tensor]]:
    """Config and weights (our keys) of a modified-CPC checkpoint; sizes come from the tensor shapes.

    The release's hidden states are the encoder output and the last LSTM layer's; ours add every LSTM layer.
    Only the default architecture converts: the CPC conv encoder with channel norm and a unidirectional LSTM
    as wide as the encoder (the arguments are checked when the file carries them)."""
    args = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    required = (("encoder_type", "cpc"), ("normMode", "layerNorm"), ("arMode", "LSTM"), ("cpc_mode", None))
    for key, value in required:
        if args.get(key, value) != value:
            raise ConfigError(f"{source}: CPC {key}={args[key]!r} is not supported (only {value!r})")
    state = checkpoint["weights"] if "weights" in checkpoint else checkpoint["gEncoder"]
    conv0 = state.get("gEncoder.conv0.weight")
    if conv0 is None:
        raise CheckpointError(f"{source}: no gEncoder.conv0.weight: not a CPC encoder")
    layers = sorted({int(m.group(1)) for key in state
                     if (m := re.match(r"^gAR\.baseNet\.weight_ih_l(\d+)$", key))})
    if args.get("hiddenGar", conv0.shape[0]) != conv0.shape[0]:
        raise ConfigError(f"{source}: hiddenGar={args['hiddenGar']} differs from the encoder width "
                          f"{conv0.shape[0]}; only equal widths are supported")
    config = CPCConfig(hidden_size=int(conv0.shape[0]), num_lstm_layers=len(layers) or 1)
    return config, _rename(state, _RELEASE_RULES, _RELEASE_IGNORED)


@register_upstream("cpc")
def cpc(**overrides: Any) -> CPC:
    """Modified CPC of Rivière et al. 2020: 256 channels, one LSTM layer of 256."""
    return CPC(replace(CPCConfig(), **overrides))


@register_upstream("cpc_big")
def cpc_big(**overrides: Any) -> CPC:
    """CPC-big of the ZeroSpeech 2021 baseline: 512 channels, four LSTM layers of 512."""
    return CPC(replace(CPCConfig(hidden_size=512, num_lstm_layers=4), **overrides))


@register_upstream("cpc_tiny")
def cpc_tiny(**overrides: Any) -> CPC:
    """A small CPC for tests."""
    return CPC(replace(CPCConfig(hidden_size=32, num_lstm_layers=2), **overrides))

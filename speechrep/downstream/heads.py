"""Light downstream heads for SUPERB tasks, each an nn.Module taking (features (B, T, H), lengths (B,)).

| head | tasks | output |
|---|---|---|
| `MeanPoolLinear` | KS, SID, ER, IC | (B, C) logits, or one (B, C_k) per slot for IC |
| `FrameLinear` | PR, PF | (B, T, C) per-frame logits (CTC for PR: see `speechrep.downstream.ctc`) |
| `BiLSTMCTC` | ASR, SF | (B, T, V) CTC logits from a 2-layer BiLSTM over packed sequences |
| `XVector` + `AMSoftmax` | ASV | (B, E) speaker embeddings; additive-margin softmax loss for training |
| `DiarizationLSTM` + `pit_bce_loss` | SD | (B, T, S) per-speaker activity logits; permutation-invariant BCE |
| `MaskBiLSTM` | SE, SS | (B, S, T, F) sigmoid masks on the STFT magnitude of the mixture |

Frame heads keep the frame rate of the features: `lengths` stays valid for their outputs. The STFT helpers
(`stft`, `istft`, `match_frames`, from `speechrep.downstream.spectral`) go between 16 kHz waves and (B, T, F) spectra with n_fft 512 and hop 160,
one frame per 10 ms like a 160-stride upstream; `MaskBiLSTM` repeats each frame of a coarser upstream (stride
320) `feature_stride // hop_length` times to reach the STFT rate. Sizes default to SUPERB's heads.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.downstream.metrics.separation import pit_assign
from speechrep.downstream.spectral import istft, match_frames, stft  # noqa: F401 - importable from here
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.nn.pooling import AttentiveStatisticsPooling, StatisticsPooling, masked_mean
from speechrep.upstream.base import padding_mask


def _run_lstm(rnn: nn.LSTM, features: Tensor, lengths: Tensor) -> Tensor:
    """Run an LSTM over the valid frames only (padding never enters the recurrence); zeros at padding.

    Same result as a PackedSequence, computed on the padded batch: the forward direction reads padding only
    after the valid frames, and the reverse direction runs on each utterance reversed within its own length.
    (On CPU, backpropagating through a PackedSequence of unequal lengths is about ten times slower.)
    """
    if not isinstance(rnn, nn.LSTM) or rnn.proj_size or not rnn.batch_first:
        raise ConfigError(f"_run_lstm: needs a batch-first nn.LSTM without projection, got {rnn}")
    batch, frames = features.shape[:2]
    time = torch.arange(frames, device=features.device)[None, :]
    valid_lengths = lengths.to(features.device).long()[:, None]
    valid = time < valid_lengths  # (B, T)
    reverse = torch.where(valid, valid_lengths - 1 - time, time)[..., None]  # an involution on each row
    directions = ["", "_reverse"] if rnn.bidirectional else [""]
    hidden = features
    for layer in range(rnn.num_layers):
        outputs = []
        for suffix in directions:
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
            weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]
            inputs = hidden.gather(1, reverse.expand_as(hidden)) if suffix else hidden
            state = inputs.new_zeros(1, batch, rnn.hidden_size)
            out = torch.lstm(inputs, (state, state), weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
            outputs.append(out.gather(1, reverse.expand_as(out)) if suffix else out)
        hidden = torch.cat(outputs, dim=-1)
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            hidden = F.dropout(hidden, rnn.dropout, rnn.training)
    return hidden * valid[..., None].to(hidden.dtype)


class MeanPoolLinear(nn.Module):
    """Project, mean-pool the valid frames, classify (SUPERB's utterance-level head); one softmax per slot."""

    def __init__(self, input_size: int, num_classes: int | Sequence[int], projection_size: int | None = 256):
        super().__init__()
        self.multi_output = not isinstance(num_classes, int)
        classes = list(num_classes) if self.multi_output else [num_classes]
        if not classes or min(classes) < 1:
            raise ConfigError(f"MeanPoolLinear: num_classes must be positive, got {num_classes}")
        self.projection = nn.Linear(input_size, projection_size) if projection_size else nn.Identity()
        pooled_size = projection_size or input_size
        self.classifiers = nn.ModuleList(nn.Linear(pooled_size, c) for c in classes)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor | list[Tensor]:
        pooled = masked_mean(self.projection(features), lengths)
        logits = [classifier(pooled) for classifier in self.classifiers]
        return logits if self.multi_output else logits[0]


class FrameLinear(nn.Module):
    """A linear layer on every frame: (B, T, H) → (B, T, C) logits."""

    def __init__(self, input_size: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(input_size, num_classes)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.linear(features)


class BiLSTMCTC(nn.Module):
    """Bidirectional LSTM stack + projection to the CTC vocabulary (SUPERB ASR: 2 layers × 1024 units)."""

    def __init__(
        self,
        input_size: int,
        vocab_size: int,
        hidden_size: int = 1024,
        num_layers: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.projection = nn.Linear(2 * hidden_size, vocab_size)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.projection(_run_lstm(self.lstm, features, lengths))


class XVector(nn.Module):
    """TDNN x-vector (Snyder et al., 2018): 5 frame layers, statistics pooling, embedding: → (B, E).

    Padded frames are zeroed after every layer, so in eval mode a padded batch equals utterances run alone
    (in training mode batch norm statistics include padding, as in most x-vector recipes).
    """

    CONTEXT = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))  # (kernel, dilation) of the five TDNN layers

    def __init__(
        self,
        input_size: int,
        embedding_size: int = 512,
        channels: int = 512,
        stats_channels: int = 1500,
        attentive: bool = False,
    ):
        super().__init__()
        sizes = [input_size, channels, channels, channels, channels, stats_channels]
        self.frame_layers = nn.ModuleList(
            nn.Sequential(
                # "same" padding keeps frame k aligned with input frame k, so lengths stay valid
                nn.Conv1d(
                    sizes[k], sizes[k + 1], kernel, dilation=dilation, padding=dilation * (kernel // 2)
                ),
                nn.ReLU(),
                nn.BatchNorm1d(sizes[k + 1]),
            )
            for k, (kernel, dilation) in enumerate(self.CONTEXT)
        )
        self.pooling = AttentiveStatisticsPooling(stats_channels) if attentive else StatisticsPooling()
        self.embedding = nn.Linear(2 * stats_channels, embedding_size)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        mask = padding_mask(lengths.to(features.device), features.shape[1])[:, None, :].to(features.dtype)
        hidden = features.transpose(1, 2) * mask
        for layer in self.frame_layers:
            hidden = layer(hidden) * mask
        return self.embedding(self.pooling(hidden.transpose(1, 2), lengths))


class AMSoftmax(nn.Module):
    """Additive-margin softmax loss (Wang et al., 2018): CE over scale · (cos θ - margin at the target)."""

    def __init__(self, embedding_size: int, num_classes: int, margin: float = 0.4, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_size) / embedding_size**0.5)
        self.margin = margin
        self.scale = scale

    def cosine(self, embeddings: Tensor) -> Tensor:
        """(B, C) cosine similarity of each embedding to each class centre."""
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cosine = self.cosine(embeddings)
        margins = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosine - margins), labels)


class DiarizationLSTM(nn.Module):
    """One LSTM layer + a per-speaker linear output: (B, T, H) → (B, T, S) activity logits (SUPERB SD)."""

    def __init__(self, input_size: int, num_speakers: int = 2, hidden_size: int = 512, num_layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, num_speakers)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.output(_run_lstm(self.lstm, features, lengths))


def pit_bce_loss(logits: Tensor, labels: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Permutation-invariant BCE of (B, T, S) logits vs 0/1 labels over valid frames → (loss, perm (B, S)).

    `perm[b, j]` is the output channel matched to reference speaker j; the loss is the mean over the batch of
    each utterance's best mean-per-frame BCE.
    """
    if logits.shape != labels.shape or logits.dim() != 3:
        raise SpeechrepError(f"PIT-BCE: logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}")
    mask = padding_mask(lengths.to(logits.device), logits.shape[1]).to(logits.dtype)
    pairwise = F.binary_cross_entropy_with_logits(  # (B, T, S_out, S_ref)
        logits[:, :, :, None].expand(-1, -1, -1, labels.shape[2]),
        labels[:, :, None, :].to(logits.dtype).expand(-1, -1, logits.shape[2], -1),
        reduction="none",
    )
    pairwise = (pairwise * mask[:, :, None, None]).sum(dim=1) / mask.sum(dim=1)[:, None, None]
    best, perm = pit_assign(pairwise)
    return best.mean(), perm


class MaskBiLSTM(nn.Module):
    """BiLSTM predicting one sigmoid STFT mask per source (SUPERB SE/SS: 3 layers × 896 units).

    `forward` returns (B, num_sources, T', n_fft // 2 + 1) masks at the STFT frame rate, where
    T' = T · feature_stride // hop_length, or exactly `num_frames` when given (to match `stft(mixture)`).
    """

    def __init__(
        self,
        input_size: int,
        num_sources: int = 1,
        n_fft: int = 512,
        hop_length: int = 160,
        feature_stride: int = 160,
        hidden_size: int = 896,
        num_layers: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if feature_stride % hop_length:
            raise ConfigError(
                f"MaskBiLSTM: feature stride {feature_stride} is not a multiple of hop {hop_length}"
            )
        self.upsample = feature_stride // hop_length
        self.num_sources = num_sources
        self.num_bins = n_fft // 2 + 1
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output = nn.Linear(2 * hidden_size, num_sources * self.num_bins)

    def forward(self, features: Tensor, lengths: Tensor, num_frames: int | None = None) -> Tensor:
        if self.upsample > 1:
            features = features.repeat_interleave(self.upsample, dim=1)
            lengths = lengths * self.upsample
        masks = torch.sigmoid(self.output(_run_lstm(self.lstm, features, lengths)))
        batch, frames = masks.shape[:2]
        masks = masks.view(batch, frames, self.num_sources, self.num_bins).transpose(1, 2)
        return masks if num_frames is None else match_frames(masks, num_frames, dim=2)

"""Hand-crafted feature baselines (fbank, MFCC, mel, spectrogram) as parameter-free upstreams, stride 160.

Also the shared log-mel front end of the mel-input SSL families (APC, NPC, Mockingjay/TERA/ALBERT, MelHuBERT):
`log_mel_features(wavs, wav_lens)` → (B, T', 80) Kaldi-compatible log-mel filterbank, 25 ms window, 10 ms hop,
and `CorpusStatistics`, the per-bin corpus mean and std that standardise it instead of per-utterance CMVN.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from speechrep.audio import features
from speechrep.errors import AudioError
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.registry import register_upstream

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms: the analysis window of the log-mel front ends


def log_mel_geometry(stride: int, frame_local: bool, zero_filled_tail: bool = False) -> FrameGeometry:
    """Geometry of `stride / HOP` stacked 25 ms / 10 ms log-mel frames; `zero_filled_tail`: a last partial
    stack is kept (zero-filled) rather than dropped."""
    end_padding = stride - HOP if zero_filled_tail else 0
    return FrameGeometry(WINDOW + stride - HOP, stride, 0, end_padding, frame_local)


def log_mel_features(wavs: Tensor, wav_lens: Tensor, num_mel_bins: int = 80,
                     cmvn: bool = True, window_type: str = "povey") -> tuple[Tensor, Tensor]:
    """(B, T', num_mel_bins) Kaldi log-mel filterbank (utterance CMVN unless cmvn=False), frame lengths."""
    feats, lengths = features.fbank(wavs, wav_lens, num_mel_bins=num_mel_bins, window_type=window_type)
    return (features.cmvn(feats, lengths) if cmvn else feats), lengths


def require_one_frame(wav_lens: Tensor, geometry: FrameGeometry, family: str) -> None:
    """AudioError when an utterance of the batch is too short to make one output frame."""
    if wav_lens.numel() and int(wav_lens.min()) < geometry.min_samples:
        raise AudioError(f"an utterance has {int(wav_lens.min())} samples, fewer than the "
                         f"{geometry.min_samples} one {family} frame needs")


class CorpusStatistics:
    """Mixin for an upstream module that standardises its log-mel with corpus statistics, not per utterance.

    The per-bin mean and std are buffers (`feature_mean`, `feature_std`, saved with the weights), identity
    until `set_feature_stats` or a checkpoint fills them. Per-utterance CMVN removes each utterance's average
    spectrum, and with it much of the speaker's; corpus statistics keep it.
    """

    def register_feature_stats(self, num_mel_bins: int) -> None:
        """Create the identity statistics; call from `__init__`."""
        self.register_buffer("feature_mean", torch.zeros(num_mel_bins))
        self.register_buffer("feature_std", torch.ones(num_mel_bins))

    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-bin corpus statistics that standardise the log-mel."""
        if not hasattr(self, "feature_mean"):
            raise ValueError("this encoder normalises each utterance (corpus_norm=False): no statistics")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def standardise(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """(B, T', bins) log-mel standardised with the corpus statistics; padded frames stay zero."""
        keep = padding_mask(lengths, feats.shape[1])[..., None].to(feats.dtype)
        return (feats - self.feature_mean) / self.feature_std * keep


@dataclass(frozen=True)
class BaselineConfig:
    """Which hand-crafted feature (a `speechrep.audio.features.FeatureExtractor` kind) and its options."""

    kind: str = "fbank"  # fbank | mfcc | mel | spectrogram
    delta_order: int = 0
    cmvn: bool = True
    options: tuple[tuple[str, object], ...] = (("num_mel_bins", 80),)  # keywords of the feature function


class FeatureBaseline(nn.Module):
    """A parameter-free upstream returning one hidden state: the features themselves (padding zero)."""

    sample_rate = SAMPLE_RATE
    stride = HOP

    def __init__(self, config: BaselineConfig):
        super().__init__()
        self.config = config
        self.extractor = features.FeatureExtractor(config.kind, delta_order=config.delta_order,
                                                   apply_cmvn=config.cmvn, **dict(config.options))
        self.hidden_sizes = [self.extractor.dim]

    @property
    def frame_geometry(self) -> FrameGeometry:
        """One analysis window per frame; frames centred on multiples of the shift without snip_edges."""
        options = self.extractor.frame_options
        # deltas (edge-replicated) and CMVN make a frame depend on its neighbours / the whole utterance
        local = not self.config.cmvn and self.config.delta_order == 0
        if options.snip_edges:
            return FrameGeometry(options.frame_length, options.frame_shift, frame_local=local)
        half = options.frame_length // 2
        return FrameGeometry(options.frame_length, options.frame_shift, half,
                             half - options.frame_shift // 2, local)

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        """Features of the padded batch, (B, T', D), with frame lengths 1 + (samples − 400) // 160."""
        feats, lengths = self.extractor(wavs, wav_lens)
        return UpstreamOutput([feats], lengths)


# torchaudio-style front end (Hann window, no pre-emphasis or DC removal), as S3PRL's mel/linear baselines
_PLAIN_FRAMES = (("window_type", "hann"), ("preemph_coeff", 0.0), ("remove_dc_offset", False))


@register_upstream("fbank")
def fbank(**overrides: Any) -> FeatureBaseline:
    """80 Kaldi log-mel filterbank, per-utterance CMVN (SUPERB's FBANK baseline)."""
    return FeatureBaseline(replace(BaselineConfig(kind="fbank"), **overrides))


@register_upstream("fbank_raw")
def fbank_raw(**overrides: Any) -> FeatureBaseline:
    """80 Kaldi log-mel filterbank, unnormalised (corpus-level statistics are applied downstream)."""
    return FeatureBaseline(replace(BaselineConfig(kind="fbank", cmvn=False), **overrides))


@register_upstream("mfcc")
def mfcc(**overrides: Any) -> FeatureBaseline:
    """13 Kaldi MFCC + Δ + ΔΔ (39), per-utterance CMVN."""
    return FeatureBaseline(replace(BaselineConfig(kind="mfcc", delta_order=2, options=(("num_ceps", 13),)),
                                   **overrides))


@register_upstream("mel")
def mel(**overrides: Any) -> FeatureBaseline:
    """80 log-mel energies from a Hann-window front end, per-utterance CMVN."""
    config = BaselineConfig(kind="fbank", options=(("num_mel_bins", 80), *_PLAIN_FRAMES))
    return FeatureBaseline(replace(config, **overrides))


@register_upstream("spectrogram")
def spectrogram(**overrides: Any) -> FeatureBaseline:
    """257-bin log power spectrogram (512-point FFT, Hann window), per-utterance CMVN."""
    return FeatureBaseline(replace(BaselineConfig(kind="spectrogram", options=_PLAIN_FRAMES), **overrides))

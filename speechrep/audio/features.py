"""Kaldi-compatible speech features in batched torch: log-mel filterbank, MFCC, mel and power spectrograms.

Every function takes padded waveforms `(B, T)` in [-1, 1] plus their lengths `(B,)` and returns padded
features `(B, T', D)` plus frame lengths `(B,)`. Frames past an utterance's length are zero, and real frames
never depend on padding, so a padded batch equals the utterances computed one by one. Defaults follow
Kaldi (`compute-fbank-feats`, `compute-mfcc-feats`): 25 ms Povey window, 10 ms hop, DC removal,
pre-emphasis 0.97, snip_edges, no dither, samples scaled by 32768 as Kaldi reads 16-bit audio.

lhotse's torch layers (lhotse.features.kaldi.layers) are not used: they take no lengths, and Wav2MFCC with
use_energy=True (Kaldi's MFCC default) fails on batched input.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from speechrep.errors import ConfigError

# Kaldi floors energies and log arguments at float epsilon.
_FLOAT_EPS = torch.finfo(torch.float32).eps

FeatureKind = Literal["fbank", "mfcc", "mel", "spectrogram"]


@dataclass(frozen=True)
class FrameOptions:
    """How waveforms are cut into windowed frames (Kaldi's FrameExtractionOptions)."""

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: Literal["povey", "hann", "hamming", "rectangular", "blackman"] = "povey"
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    waveform_scale: float = 32768.0  # Kaldi reads 16-bit PCM as integers; [-1, 1] audio is scaled to match

    @property
    def frame_length(self) -> int:
        """Samples per frame."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        """FFT length: the frame length, rounded up to a power of two if asked."""
        n = self.frame_length
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n


def _frame_options(options: dict[str, Any]) -> FrameOptions:
    known = {f.name for f in fields(FrameOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"features: unknown option(s) {unknown}; frame options are {sorted(known)}")
    frame_options = FrameOptions(**options)
    if frame_options.frame_shift <= 0 or frame_options.frame_length <= 0:
        raise ConfigError(f"features: frame length and shift must be positive, got {frame_options}")
    return frame_options


def num_frames(
    num_samples: int | Tensor,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    snip_edges: bool = True,
) -> int | Tensor:
    """Number of feature frames Kaldi makes from `num_samples` samples (int or integer tensor)."""
    opts = FrameOptions(sample_rate=sample_rate, frame_length_ms=frame_length_ms, frame_shift_ms=frame_shift_ms)
    length, shift = opts.frame_length, opts.frame_shift
    if isinstance(num_samples, Tensor):
        if snip_edges:
            return torch.where(num_samples >= length, (num_samples - length) // shift + 1, 0)
        return (num_samples + shift // 2) // shift
    if snip_edges:
        return 0 if num_samples < length else (num_samples - length) // shift + 1
    return (num_samples + shift // 2) // shift


def _constant_cache(maxsize: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`functools.lru_cache` for builders of constant tensors (windows, filter banks, DCT and delta kernels),
    always built outside inference mode: a cached inference tensor would break autograd for every later
    caller (the first call may come from an `inference_mode` block, e.g. an evaluation)."""
    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args: Any, **kwargs: Any) -> Any:
            with torch.inference_mode(False):
                return build(*args, **kwargs)
        return cached
    return wrap


@_constant_cache(maxsize=16)
def _window(window_type: str, length: int) -> Tensor:
    n = torch.arange(length, dtype=torch.float64)
    cosine = torch.cos(2 * math.pi * n / (length - 1))
    if window_type == "povey":
        return ((0.5 - 0.5 * cosine) ** 0.85).float()
    if window_type == "hann":
        return (0.5 - 0.5 * cosine).float()
    if window_type == "hamming":
        return (0.54 - 0.46 * cosine).float()
    if window_type == "blackman":
        return (0.42 - 0.5 * cosine + 0.08 * torch.cos(4 * math.pi * n / (length - 1))).float()
    if window_type == "rectangular":
        return torch.ones(length)
    raise ConfigError(f"features: unknown window_type {window_type!r}")


def _mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


@_constant_cache(maxsize=16)
def mel_banks(
    num_bins: int, fft_size: int, sample_rate: int, low_freq: float = 20.0, high_freq: float = 0.0
) -> Tensor:
    """Kaldi's triangular mel filters as a `(fft_size // 2 + 1, num_bins)` matrix (Nyquist row is zero)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not (0.0 <= low_freq < high <= nyquist) or num_bins < 3:
        raise ConfigError(
            f"features: need 0 <= low_freq < high_freq <= {nyquist} and >= 3 mel bins, "
            f"got low_freq={low_freq}, high_freq={high_freq}, num_bins={num_bins}"
        )
    mel_low, mel_high = _mel(torch.tensor(low_freq, dtype=torch.float64)), _mel(torch.tensor(high, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + torch.arange(num_bins, dtype=torch.float64) * delta
    center, right = left + delta, left + 2 * delta
    # Kaldi skips the Nyquist bin: only fft_size // 2 bins carry weights.
    fft_mel = _mel(torch.arange(fft_size // 2, dtype=torch.float64) * (sample_rate / fft_size))[:, None]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([weights, torch.zeros(1, num_bins, dtype=torch.float64)]).float()


def _reflected_frames(wavs: Tensor, lengths: Tensor, opts: FrameOptions, count: int) -> Tensor:
    """Frames centred on multiples of the shift, mirroring each utterance at its own ends (snip_edges=False)."""
    length, shift = opts.frame_length, opts.frame_shift
    starts = torch.arange(count, device=wavs.device) * shift + shift // 2 - length // 2
    index = starts[:, None] + torch.arange(length, device=wavs.device)  # (T', L)
    size = lengths.clamp(min=1)[:, None, None]
    # Kaldi mirrors sample by sample (-1 -> 0, n -> n-1), repeatedly for very short utterances: that is a
    # symmetric extension with period 2n.
    index = torch.remainder(index.expand(wavs.shape[0], -1, -1), 2 * size)
    index = torch.where(index >= size, 2 * size - 1 - index, index)
    return torch.gather(wavs, 1, index.reshape(wavs.shape[0], -1)).view(wavs.shape[0], count, length)


def _frames(wavs: Tensor, lengths: Tensor | None, opts: FrameOptions) -> tuple[Tensor, Tensor, Tensor]:
    """Windowed frames `(B, T', L)`, raw log energy `(B, T')` and frame lengths `(B,)`."""
    if wavs.dim() != 2:
        raise ValueError(f"features: expected waveforms shaped (batch, time), got {tuple(wavs.shape)}")
    wavs = wavs.float() * opts.waveform_scale
    batch, total = wavs.shape
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long, device=wavs.device)
    lengths = lengths.to(device=wavs.device, dtype=torch.long)
    if lengths.shape != (batch,) or (batch and (int(lengths.max()) > total or int(lengths.min()) < 0)):
        raise ValueError(f"features: lengths {lengths.tolist()} do not fit waveforms shaped {tuple(wavs.shape)}")
    frame_lens = num_frames(lengths, opts.sample_rate, opts.frame_length_ms, opts.frame_shift_ms, opts.snip_edges)
    count = int(frame_lens.max()) if batch else 0
    length = opts.frame_length
    if count == 0:
        frames = wavs.new_zeros(batch, 0, length)
    elif opts.snip_edges:
        frames = wavs.unfold(1, length, opts.frame_shift)[:, :count]
    else:
        frames = _reflected_frames(wavs, lengths, opts, count)
    if opts.dither != 0.0:
        frames = frames + opts.dither * torch.randn_like(frames)
    if opts.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    log_energy = frames.square().sum(-1).clamp(min=_FLOAT_EPS).log()
    if opts.preemph_coeff != 0.0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - opts.preemph_coeff * previous
    frames = frames * _window(opts.window_type, length).to(frames.device)
    return frames, log_energy, frame_lens


def _valid_mask(frame_lens: Tensor, count: int) -> Tensor:
    return torch.arange(count, device=frame_lens.device)[None, :] < frame_lens[:, None]


def _power_spectrum(frames: Tensor, opts: FrameOptions) -> Tensor:
    if frames.numel() == 0:  # MKL's FFT rejects empty batches (e.g. every utterance shorter than a frame)
        return frames.new_zeros(*frames.shape[:-1], opts.fft_size // 2 + 1)
    return torch.fft.rfft(frames, n=opts.fft_size).abs().square()


def _finish(feats: Tensor, frame_lens: Tensor) -> tuple[Tensor, Tensor]:
    """Zero the frames past each utterance so padding content never leaks into the output."""
    return feats * _valid_mask(frame_lens, feats.shape[1])[..., None], frame_lens


def spectrogram(
    wavs: Tensor, lengths: Tensor | None = None, *, log: bool = True, **frame_options: Any
) -> tuple[Tensor, Tensor]:
    """Power spectrogram `(B, T', fft_size // 2 + 1)` (natural log, floored at float eps, when `log`)."""
    opts = _frame_options(frame_options)
    frames, _, frame_lens = _frames(wavs, lengths, opts)
    power = _power_spectrum(frames, opts)
    if log:
        power = power.clamp(min=_FLOAT_EPS).log()
    return _finish(power, frame_lens)


def mel_spectrogram(
    wavs: Tensor,
    lengths: Tensor | None = None,
    *,
    num_mel_bins: int = 80,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    log: bool = False,
    use_energy: bool = False,
    energy_floor: float = 0.0,
    **frame_options: Any,
) -> tuple[Tensor, Tensor]:
    """Mel filterbank energies `(B, T', num_mel_bins)` (+1 leading log-energy column if `use_energy`)."""
    opts = _frame_options(frame_options)
    frames, log_energy, frame_lens = _frames(wavs, lengths, opts)
    banks = mel_banks(num_mel_bins, opts.fft_size, opts.sample_rate, low_freq, high_freq).to(frames.device)
    mel = _power_spectrum(frames, opts) @ banks
    if log:
        mel = mel.clamp(min=_FLOAT_EPS).log()
    if use_energy:
        mel = torch.cat([_floor_energy(log_energy, energy_floor)[..., None], mel], dim=-1)
    return _finish(mel, frame_lens)


def _floor_energy(log_energy: Tensor, energy_floor: float) -> Tensor:
    return log_energy.clamp(min=math.log(energy_floor)) if energy_floor > 0 else log_energy


def fbank(
    wavs: Tensor, lengths: Tensor | None = None, *, num_mel_bins: int = 80, **options: Any
) -> tuple[Tensor, Tensor]:
    """Kaldi log-mel filterbank `(B, T', num_mel_bins)`, as `compute-fbank-feats` with dither 0."""
    return mel_spectrogram(wavs, lengths, num_mel_bins=num_mel_bins, log=True, **options)


@_constant_cache(maxsize=16)
def _dct_matrix(num_ceps: int, num_bins: int) -> Tensor:
    """Kaldi's orthonormal DCT-II, `(num_bins, num_ceps)`, so cepstra = log_mel @ matrix."""
    k = torch.arange(num_ceps, dtype=torch.float64)[None, :]
    n = torch.arange(num_bins, dtype=torch.float64)[:, None]
    matrix = torch.cos(math.pi / num_bins * (n + 0.5) * k) * math.sqrt(2.0 / num_bins)
    matrix[:, 0] = math.sqrt(1.0 / num_bins)
    return matrix.float()


def mfcc(
    wavs: Tensor,
    lengths: Tensor | None = None,
    *,
    num_ceps: int = 13,
    num_mel_bins: int = 23,
    cepstral_lifter: float = 22.0,
    use_energy: bool = True,
    energy_floor: float = 0.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    **frame_options: Any,
) -> tuple[Tensor, Tensor]:
    """Kaldi MFCC `(B, T', num_ceps)`: DCT of log-mel, liftered, C0 replaced by the raw log energy."""
    if not 0 < num_ceps <= num_mel_bins:
        raise ConfigError(f"features: need 0 < num_ceps <= num_mel_bins, got {num_ceps} and {num_mel_bins}")
    opts = _frame_options(frame_options)
    frames, log_energy, frame_lens = _frames(wavs, lengths, opts)
    banks = mel_banks(num_mel_bins, opts.fft_size, opts.sample_rate, low_freq, high_freq).to(frames.device)
    log_mel = (_power_spectrum(frames, opts) @ banks).clamp(min=_FLOAT_EPS).log()
    ceps = log_mel @ _dct_matrix(num_ceps, num_mel_bins).to(frames.device)
    if cepstral_lifter != 0.0:
        q = torch.arange(num_ceps, dtype=torch.float64, device=frames.device)
        ceps = ceps * (1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * q / cepstral_lifter)).float()
    if use_energy:
        ceps = torch.cat([_floor_energy(log_energy, energy_floor)[..., None], ceps[..., 1:]], dim=-1)
    return _finish(ceps, frame_lens)


@_constant_cache(maxsize=8)
def _delta_kernels(order: int, window: int) -> tuple[Tensor, ...]:
    """Kaldi's DeltaFeatures scales: the order-k kernel is the order-(k-1) kernel convolved with n / sum(n^2)."""
    ramp = torch.arange(-window, window + 1, dtype=torch.float64)
    ramp = ramp / ramp.square().sum()
    kernels = [torch.ones(1, dtype=torch.float64)]
    for _ in range(order):
        previous = kernels[-1]
        current = torch.zeros(previous.numel() + 2 * window, dtype=torch.float64)
        for shift, weight in enumerate(ramp.tolist()):  # a handful of taps, built once and cached
            current[shift : shift + previous.numel()] += weight * previous
        kernels.append(current)
    return tuple(kernel.float() for kernel in kernels)


def deltas(feats: Tensor, order: int = 2, window: int = 2, lengths: Tensor | None = None) -> Tensor:
    """Append Kaldi `add-deltas` features: `(B, T, D)` -> `(B, T, D * (order + 1))`.

    Edge frames repeat the first/last real frame of each utterance (padding is never read).
    """
    if order < 0 or window < 1:
        raise ConfigError(f"deltas: need order >= 0 and window >= 1, got order={order}, window={window}")
    batch, count, _ = feats.shape
    if lengths is None:
        lengths = torch.full((batch,), count, dtype=torch.long, device=feats.device)
    lengths = lengths.to(device=feats.device, dtype=torch.long)
    kernels = _delta_kernels(order, window)
    reach = order * window
    offsets = torch.arange(-reach, reach + 1, device=feats.device)
    time = torch.arange(count, device=feats.device)
    index = (time[None, :, None] + offsets).clamp(min=0)  # (1, T, K)
    index = torch.minimum(index, (lengths.clamp(min=1) - 1)[:, None, None])  # (B, T, K)
    neighbours = torch.gather(
        feats.unsqueeze(2).expand(-1, -1, offsets.numel(), -1),
        1,
        index[..., None].expand(-1, -1, -1, feats.shape[-1]),
    )  # (B, T, K, D)
    outputs = [feats]
    for kernel in kernels[1:]:
        pad = reach - (kernel.numel() - 1) // 2
        full = torch.nn.functional.pad(kernel, (pad, pad)).to(feats)
        outputs.append(torch.einsum("btkd,k->btd", neighbours, full))
    out = torch.cat(outputs, dim=-1)
    return out * _valid_mask(lengths, count)[..., None]


def cmvn(feats: Tensor, lengths: Tensor | None = None, norm_vars: bool = True, eps: float = 1e-5) -> Tensor:
    """Per-utterance mean (and variance) normalisation over each utterance's valid frames only."""
    batch, count, _ = feats.shape
    if lengths is None:
        lengths = torch.full((batch,), count, dtype=torch.long, device=feats.device)
    mask = _valid_mask(lengths.to(feats.device), count)[..., None].to(feats.dtype)
    frames = lengths.to(feats.device, feats.dtype).clamp(min=1)[:, None, None]
    mean = (feats * mask).sum(1, keepdim=True) / frames
    centred = (feats - mean) * mask
    if norm_vars:
        std = (centred.square().sum(1, keepdim=True) / frames).add(eps).sqrt()
        centred = centred / std
    return centred


class FeatureExtractor(nn.Module):
    """Batched Kaldi-compatible front end: `forward(wavs, lengths) -> (features, frame_lengths)`.

    `kind` is "fbank" (log-mel), "mfcc", "mel" (linear mel energies) or "spectrogram" (log power); the
    remaining keywords go to that function (e.g. `num_mel_bins=40`, `snip_edges=False`). `delta_order`
    appends deltas; `apply_cmvn` normalises each utterance.
    """

    _functions = {"fbank": fbank, "mfcc": mfcc, "mel": mel_spectrogram, "spectrogram": spectrogram}

    def __init__(
        self, kind: FeatureKind = "fbank", delta_order: int = 0, apply_cmvn: bool = False, **options: Any
    ) -> None:
        super().__init__()
        if kind not in self._functions:
            raise ConfigError(f"FeatureExtractor: unknown kind {kind!r}; choose from {sorted(self._functions)}")
        self.kind, self.delta_order, self.apply_cmvn, self.options = kind, delta_order, apply_cmvn, dict(options)
        frame_keys = {f.name for f in fields(FrameOptions)}
        self.frame_options = _frame_options({k: v for k, v in options.items() if k in frame_keys})
        # One frame of silence validates the options now and gives the output width.
        probe, _ = self._functions[kind](torch.zeros(1, self.frame_options.frame_length), **options)
        self.dim = probe.shape[-1] * (delta_order + 1)

    @property
    def stride(self) -> int:
        """Waveform samples per output frame."""
        return self.frame_options.frame_shift

    @property
    def sample_rate(self) -> int:
        """Expected waveform sample rate."""
        return self.frame_options.sample_rate

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Features `(B, T', dim)` and frame lengths `(B,)` for waveforms `(B, T)` in [-1, 1]."""
        feats, frame_lens = self._functions[self.kind](wavs, lengths, **self.options)
        if self.delta_order:
            feats = deltas(feats, self.delta_order, lengths=frame_lens)
        if self.apply_cmvn:
            feats = cmvn(feats, frame_lens)
        return feats, frame_lens

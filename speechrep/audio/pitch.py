"""Pitch (F0 + voicing) and energy on a frame grid: a vectorised YIN tracker in numpy.

YIN (de Cheveigné & Kawahara, 2002): for each frame the difference function d(τ) = Σ_j (x_j − x_{j+τ})² over
an integration window of W samples (made symmetric here: the centre window against the windows τ earlier
and τ later), its cumulative mean normalised form d'(τ), the first lag whose d' falls under an absolute
threshold (then down to that dip's local minimum; the global minimum when none does),
parabolic interpolation of d around it. Every frame is computed at once: d(τ) = E₀ + E_τ − 2·r(τ) with the
cross terms r from one batched FFT and the energies from a cumulative sum, so there is no per-frame loop.

Frame i is centred at sample (i + 0.5)·hop, the convention of the frame labels of the downstream tasks
(`speechrep.downstream.tasks.pf`); pass `centres` (e.g. `FrameGeometry.centre_samples`) for another grid.
A frame is voiced when its d' dip is deep (aperiodicity under `voicing_threshold`) and it is not silent.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from speechrep.errors import SpeechrepError

ENERGY_FLOOR_DB = -100.0  # log-RMS of digital silence


@dataclass(frozen=True)
class PitchTrack:
    """Per-frame F0 in Hz (0 where unvoiced), voicing, log-RMS energy in dB and frame-centre times."""

    f0_hz: np.ndarray  # (N,) float64
    voiced: np.ndarray  # (N,) bool
    energy_db: np.ndarray  # (N,) float64, 20·log10(RMS) of a window centred on the frame
    times: np.ndarray  # (N,) seconds, frame centres
    aperiodicity: np.ndarray  # (N,) d' at the chosen lag: near 0 for a clean periodic frame, ~1 for noise

    def __len__(self) -> int:
        return len(self.f0_hz)


def _as_mono(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """A 1-D float64 array from a (T,) or (1, T) numpy array or tensor."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1:
        raise SpeechrepError(f"pitch_track: expected mono audio (T,) or (1, T), got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise SpeechrepError("pitch_track: the audio contains NaN or infinite samples")
    return wav


def _frames(wav: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(N, length) view-backed copy of `wav` windows starting at `starts` (zeros outside the signal)."""
    pad_left = int(max(0, -starts.min())) if len(starts) else 0
    pad_right = int(max(0, starts.max() + length - len(wav))) if len(starts) else 0
    padded = np.pad(wav, (pad_left, pad_right))
    if len(padded) < length:
        padded = np.pad(padded, (0, length - len(padded)))
    return sliding_window_view(padded, length)[starts + pad_left]


def frame_energy_db(wav: np.ndarray | torch.Tensor, centres: np.ndarray, window: int) -> np.ndarray:
    """Log-RMS energy in dB of a `window`-sample window centred on each of `centres` (zeros outside)."""
    wav = _as_mono(wav)
    squares = np.concatenate([[0.0], np.cumsum(wav * wav)])
    starts = np.round(np.asarray(centres) - window / 2).astype(np.int64)
    lo = np.clip(starts, 0, len(wav))
    hi = np.clip(starts + window, 0, len(wav))
    power = np.maximum(squares[hi] - squares[lo], 0.0) / window
    return np.maximum(10.0 * np.log10(power + 1e-30), ENERGY_FLOOR_DB)


def yin_cmnd(frames: np.ndarray, window: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric difference function d and its normalised form d' for lags 0..max_lag, per frame.

    `frames` (N, window + 2·max_lag) hold each frame's centre window with max_lag samples either side; d(τ)
    compares the centre window with the windows τ earlier and τ later and sums the two, so the estimate
    belongs to the frame centre whatever the lag (one-sided YIN lags the centre by (max_lag − τ)/2 samples,
    a 0.7 % bias on a two-octave-per-second glide).
    """
    num, length = frames.shape
    n_fft = 1 << int(np.ceil(np.log2(length + window)))
    head = np.fft.rfft(frames[:, max_lag:max_lag + window], n_fft)
    full = np.fft.rfft(frames, n_fft)
    cross = np.fft.irfft(np.conj(head) * full, n_fft)[:, : 2 * max_lag + 1]  # r(k) = Σ_j c_j x_{j+k}
    squares = np.concatenate([np.zeros((num, 1)), np.cumsum(frames * frames, axis=1)], axis=1)
    lags = np.arange(max_lag + 1)
    later, earlier = max_lag + lags, max_lag - lags
    energy = squares[:, [max_lag + window]] - squares[:, [max_lag]]
    shifted = (squares[:, later + window] - squares[:, later]
               + squares[:, earlier + window] - squares[:, earlier])
    diff = np.maximum(2.0 * energy + shifted - 2.0 * (cross[:, later] + cross[:, earlier]), 0.0)
    diff[:, 0] = 0.0
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(running > 0, diff[:, 1:] * lags[1:] / running, 1.0)
    return diff, cmnd


def _octave_fix_and_smooth(f0: np.ndarray, voiced: np.ndarray, median: int, octave_window: int) -> np.ndarray:
    """Fold octave jumps onto the local median of voiced frames, then median-smooth within voiced frames."""
    log_f0 = np.where(voiced, np.log2(np.where(voiced, f0, 1.0)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-unvoiced windows give NaN, which is fine
        if octave_window > 1:
            half = octave_window // 2
            ref = np.nanmedian(sliding_window_view(np.pad(log_f0, half, constant_values=np.nan),
                                                   octave_window), axis=1)
            jump = np.round(log_f0 - ref)
            jump = np.where(np.isfinite(jump) & (np.abs(log_f0 - ref - jump) < 0.25), jump, 0.0)
            log_f0 = log_f0 - jump  # an octave error is a whole number of octaves off its neighbours
        if median > 1:
            half = median // 2
            smoothed = np.nanmedian(sliding_window_view(np.pad(log_f0, half, constant_values=np.nan), median),
                                    axis=1)
            log_f0 = np.where(voiced, smoothed, np.nan)
    return np.where(voiced, np.exp2(np.nan_to_num(log_f0)), 0.0)


def pitch_track(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int,
    hop: int,
    fmin: float = 50.0,
    fmax: float = 500.0,
    num_frames: int | None = None,
    centres: np.ndarray | torch.Tensor | None = None,
    threshold: float = 0.1,
    voicing_threshold: float = 0.3,
    silence_db: float = -60.0,
    dynamic_range_db: float = 45.0,
    energy_window: float = 0.025,
    median: int = 3,
    octave_window: int = 11,
) -> PitchTrack:
    """YIN F0, voicing and log-RMS energy of mono audio on a grid of frames `hop` samples apart.

    `num_frames` defaults to ceil(len / hop) (frame centres (i + 0.5)·hop); `centres` (samples) overrides the
    grid. A frame is voiced when its aperiodicity is under `voicing_threshold` and its energy is above both
    `silence_db` and (loudest frame − `dynamic_range_db`). `median` and `octave_window` (frames, odd; 1 turns
    them off) smooth F0 within voiced frames and fold octave jumps onto the neighbours' median.
    """
    wav = _as_mono(wav)
    if sample_rate <= 0 or hop <= 0:
        raise SpeechrepError(f"pitch_track: sample_rate and hop must be positive, got {sample_rate}, {hop}")
    if not 0 < fmin < fmax < sample_rate / 2:
        raise SpeechrepError(f"pitch_track: need 0 < fmin < fmax < sample_rate/2, got {fmin}, {fmax}")
    if centres is None:
        n = int(np.ceil(len(wav) / hop)) if num_frames is None else int(num_frames)
        centres = (np.arange(n) + 0.5) * hop
    elif isinstance(centres, torch.Tensor):
        centres = centres.cpu().numpy()
    centres = np.asarray(centres, dtype=np.float64)
    min_lag = max(2, int(np.floor(sample_rate / fmax)))
    max_lag = int(np.ceil(sample_rate / fmin)) + 1  # +1: room for the parabola around the longest period
    window = max_lag  # integrate over one longest period, as in the YIN paper
    length = window + 2 * max_lag
    starts = np.round(centres - length / 2).astype(np.int64)
    energy = frame_energy_db(wav, centres, round(energy_window * sample_rate))
    if len(centres) == 0:
        empty = np.zeros(0)
        return PitchTrack(empty, empty.astype(bool), empty, empty, empty)

    diff, cmnd = yin_cmnd(_frames(wav, starts, length), window, max_lag)
    lags = np.arange(max_lag + 1)
    in_range = (lags >= min_lag) & (lags < max_lag)
    search = np.where(in_range, cmnd, np.inf)
    below = search < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    # Walk down from the first lag under the threshold to the bottom of its dip (the next local minimum).
    nxt = np.concatenate([search[:, 1:], np.full((len(search), 1), np.inf)], axis=1)
    bottom = (search <= nxt) & (lags[None, :] >= first[:, None])
    lag = np.where(below.any(axis=1), bottom.argmax(axis=1), first)
    rows = np.arange(len(lag))
    a, b, c = diff[rows, lag - 1], diff[rows, lag], diff[rows, lag + 1]
    curvature = a - 2.0 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature > 0, 0.5 * (a - c) / curvature, 0.0)
    period = lag + np.clip(shift, -1.0, 1.0)
    aperiodicity = cmnd[rows, lag]
    loud = energy > max(silence_db, float(energy.max()) - dynamic_range_db)
    voiced = (aperiodicity < voicing_threshold) & loud
    f0 = np.where(voiced, sample_rate / period, 0.0)
    f0 = _octave_fix_and_smooth(f0, voiced, median, octave_window)
    return PitchTrack(f0, voiced, energy, centres / sample_rate, aperiodicity)

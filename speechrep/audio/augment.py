"""Audio distortions shared by the synthetic corpus and pre-training: noise at an SNR, synthetic room
impulse responses and reverberation, random EQ ("channel colouring"), band-limiting, clipping and speed
perturbation. Every function takes 1-D float numpy signals; random ones take a `np.random.Generator`."""

from __future__ import annotations

import numpy as np
import soxr
from scipy import signal as sps

_EPS = 1e-12


def signal_power(x: np.ndarray) -> float:
    """Mean power of a signal."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB between a clean signal and the noise added to it."""
    return 10.0 * np.log10((signal_power(clean) + _EPS) / (signal_power(noise) + _EPS))


def scale_noise_to_snr(clean: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """`noise` (tiled or cut to the clean length) scaled so that clean vs noise is `snr` dB."""
    if noise.size == 0:
        raise ValueError("noise signal is empty")
    reps = int(np.ceil(clean.size / noise.size))
    noise = np.tile(noise, reps)[: clean.size]
    gain = np.sqrt(signal_power(clean) / (signal_power(noise) + _EPS) / 10.0 ** (snr / 10.0))
    return (noise * gain).astype(clean.dtype, copy=False)


def add_noise(clean: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """`clean` plus `noise` scaled to the target SNR in dB (noise tiled or cut to length)."""
    return clean + scale_noise_to_snr(clean, noise, snr)


def coloured_noise(rng: np.random.Generator, num_samples: int, exponent: float = 1.0) -> np.ndarray:
    """Unit-power noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spectrum = rng.standard_normal(num_samples // 2 + 1) + 1j * rng.standard_normal(num_samples // 2 + 1)
    freqs = np.arange(num_samples // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=num_samples)
    return (noise / np.sqrt(signal_power(noise) + _EPS)).astype(np.float32)


def synthetic_rir(
    rng: np.random.Generator, sample_rate: int = 16000, rt60: float = 0.4, direct_to_reverb_db: float = 3.0
) -> np.ndarray:
    """A room impulse response: a direct path, sparse early reflections and an exponentially decaying,
    low-passed noise tail with the given RT60 (seconds). Normalised to a unit direct path."""
    length = int(sample_rate * min(1.2 * rt60, 1.5)) + 1
    t = np.arange(length) / sample_rate
    decay = np.exp(-6.9078 * t / rt60)  # -60 dB at t = rt60
    tail = rng.standard_normal(length) * decay
    tail = sps.lfilter([0.5, 0.5], [1.0], tail)  # air absorbs high frequencies
    early = np.zeros(length)
    delays = rng.integers(int(0.002 * sample_rate), int(0.05 * sample_rate), size=8)
    early[delays] = rng.uniform(-0.6, 0.6, size=8) * np.exp(-6.9078 * delays / sample_rate / rt60)
    reverb = tail + early
    reverb[0] = 0.0
    reverb *= 10.0 ** (-direct_to_reverb_db / 20.0) / (np.sqrt(np.sum(reverb**2)) + _EPS)
    reverb[0] = 1.0
    return reverb.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response, keeping the length and the direct path's timing."""
    return sps.fftconvolve(x, rir, mode="full")[: x.size].astype(x.dtype, copy=False)


def random_eq(
    rng: np.random.Generator, sample_rate: int = 16000, num_bands: int = 4, max_gain_db: float = 8.0
) -> np.ndarray:
    """Second-order sections of a random peaking-EQ chain (a fixed "channel colouring" once drawn)."""
    sections = []
    centres = np.geomspace(150.0, 0.4 * sample_rate, num_bands) * rng.uniform(0.8, 1.25, num_bands)
    for centre, gain_db, q in zip(
        centres, rng.uniform(-max_gain_db, max_gain_db, num_bands), rng.uniform(0.5, 2.0, num_bands)
    ):
        sections.append(_peaking_sos(centre, gain_db, q, sample_rate))
    return np.concatenate(sections, axis=0)


def peaking_eq(centre: float, gain_db: float, q: float = 0.7, sample_rate: int = 16000) -> np.ndarray:
    """One peaking-EQ section (RBJ audio-EQ cookbook) as second-order sections for `apply_eq`."""
    return _peaking_sos(centre, gain_db, q, sample_rate)


def _peaking_sos(centre: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    # The RBJ audio-EQ-cookbook peaking filter.
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * centre / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def apply_eq(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Filter a signal through second-order sections (from `random_eq` or `band_limit_sos`)."""
    return sps.sosfilt(sos, x).astype(x.dtype, copy=False)


def band_limit(
    x: np.ndarray,
    sample_rate: int,
    low_hz: float | None = 300.0,
    high_hz: float | None = 3400.0,
    order: int = 6,
) -> np.ndarray:
    """Butterworth band-, low- or high-pass (telephone band by default); None leaves that edge open."""
    if low_hz is None and high_hz is None:
        return x
    if low_hz is None:
        sos = sps.butter(order, high_hz, btype="lowpass", fs=sample_rate, output="sos")
    elif high_hz is None:
        sos = sps.butter(order, low_hz, btype="highpass", fs=sample_rate, output="sos")
    else:
        sos = sps.butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    return apply_eq(x, sos)


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard-clip at `level` times the signal's peak (0 < level <= 1)."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"clip level must be in (0, 1], got {level}")
    limit = level * float(np.max(np.abs(x), initial=0.0))
    return np.clip(x, -limit, limit)


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Play `factor` times faster (pitch moves too, as Kaldi's speed perturbation), resampled by soxr."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    out = soxr.resample(x.astype(np.float32, copy=False), sample_rate * factor, sample_rate, quality="HQ")
    return out.astype(x.dtype, copy=False)

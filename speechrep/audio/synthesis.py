"""Spectral pieces of synthesis: the vocoders' log-mel, Griffin-Lim, multi-resolution STFT losses, MCD.

One analysis is shared by every vocoder and by copy-synthesis: 16 kHz, a 1024-point FFT of a 40 ms Hann
window every 10 ms, Kaldi's 80 triangular mel filters (`speechrep.audio.mel_banks`), natural log of the
magnitude mel spectrum floored at 1e-5. `centre=True` framing: a wave of T samples has T // hop + 1 frames and
frame i is centred on sample i·hop.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechrep.audio.features import mel_banks

SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 640
HOP = 160
NUM_MELS = 80
LOG_FLOOR = 1e-5


def _window(length: int, device: torch.device) -> Tensor:
    return torch.hann_window(length, device=device)


def magnitude(wavs: Tensor, n_fft: int = N_FFT, hop: int = HOP,
              win_length: int | None = WIN_LENGTH) -> Tensor:
    """|STFT| (B, F, frames) of waves (B, T) (or (T,) → (F, frames)), Hann window, centred frames."""
    win = win_length or n_fft
    spec = torch.stft(wavs, n_fft, hop, win, _window(win, wavs.device), center=True, return_complex=True)
    return spec.abs()


def mel_basis(device: torch.device | str = "cpu") -> Tensor:
    """The (NUM_MELS, N_FFT // 2 + 1) mel filter matrix of the shared analysis."""
    return mel_banks(NUM_MELS, N_FFT, SAMPLE_RATE).T.to(device)


def log_mel(wavs: Tensor) -> Tensor:
    """Log-mel magnitudes (B, frames, NUM_MELS) of waves (B, T); (T,) gives (frames, NUM_MELS)."""
    mel = mel_basis(wavs.device) @ magnitude(wavs)
    return torch.log(mel.clamp(min=LOG_FLOOR)).transpose(-1, -2)


def mel_to_magnitude(log_mels: Tensor) -> Tensor:
    """Linear magnitudes (..., F, frames) of log-mels (..., frames, NUM_MELS): least squares, floored at 0."""
    basis = mel_basis(log_mels.device)
    return (torch.linalg.pinv(basis) @ log_mels.exp().transpose(-1, -2)).clamp(min=0.0)


def griffin_lim(magnitudes: Tensor, iterations: int = 32, momentum: float = 0.99, seed: int = 0,
                length: int | None = None) -> Tensor:
    """A wave (T,) whose |STFT| approximates `magnitudes` (F, frames): fast Griffin-Lim (Perraudin et al.)."""
    length = length or (magnitudes.shape[-1] - 1) * HOP
    magnitudes = magnitudes[..., :length // HOP + 1]  # the frames of `length` samples, no more
    window = _window(WIN_LENGTH, magnitudes.device)
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(magnitudes.shape, generator=generator).to(magnitudes.device) * 2 * torch.pi
    angles = torch.polar(torch.ones_like(magnitudes), phase)
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        wave = torch.istft(magnitudes * angles, N_FFT, HOP, WIN_LENGTH, window, center=True, length=length)
        rebuilt = torch.stft(wave, N_FFT, HOP, WIN_LENGTH, window, center=True, return_complex=True)
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / accelerated.abs().clamp(min=1e-8)
        previous = rebuilt
    return torch.istft(magnitudes * angles, N_FFT, HOP, WIN_LENGTH, window, center=True, length=length)


def griffin_lim_from_log_mel(log_mels: Tensor, iterations: int = 32, length: int | None = None) -> Tensor:
    """Copy-synthesis without training: log-mels (frames, NUM_MELS) → wave (T,) through Griffin-Lim."""
    return griffin_lim(mel_to_magnitude(log_mels), iterations, length=length)


# --------------------------------------------------------------------------------------------------- losses

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop): short to long windows at 16 kHz


def multi_resolution_stft_loss(estimate: Tensor, target: Tensor,
                               resolutions: tuple[tuple[int, int], ...] = STFT_RESOLUTIONS) -> Tensor:
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (Yamamoto et al. 2020)."""
    total = estimate.new_zeros(())
    for n_fft, hop in resolutions:
        est = magnitude(estimate, n_fft, hop, None).clamp(min=1e-7)
        ref = magnitude(target, n_fft, hop, None).clamp(min=1e-7)
        convergence = torch.linalg.norm(ref - est, dim=(-2, -1)) / torch.linalg.norm(ref, dim=(-2, -1))
        total = total + convergence.mean() + F.l1_loss(est.log(), ref.log())
    return total / len(resolutions)


def mel_l1_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """L1 distance of the log-mels of two wave batches (B, T)."""
    return F.l1_loss(log_mel(estimate), log_mel(target))


# ------------------------------------------------------------------------------------------------------ MCD

MCEP_ORDER = 24  # coefficients c1..c24, c0 (energy) excluded, as in the VCC evaluations


def mel_cepstrum_of_log_mel(log_mels: Tensor, order: int = MCEP_ORDER) -> Tensor:
    """Mel-cepstra c1..c_order (frames, order) of log-mels (frames, NUM_MELS): c_k = (1/n)·Σ_m L_m·cos(k·ω_m).

    With ω_m = π(m + ½)/n, the log amplitude is L(ω) ≈ c_0 + 2·Σ_k c_k·cos(k·ω), the convention of SPTK's
    mel-cepstrum, here on the vocoders' mel filterbank instead of an all-pass-warped spectral envelope: the
    filterbank smooths the spectrum, so values run lower than MCDs from SPTK's `mcep`. Frames more than
    40 dB below the loudest are dropped as silence.
    """
    logs = log_mels.float()
    energy = logs.exp().pow(2).sum(-1).clamp(min=1e-12).log10() * 10
    logs = logs[energy > energy.max() - 40.0]
    n = logs.shape[-1]
    k = torch.arange(order + 1, dtype=torch.float64)[:, None]
    m = torch.arange(n, dtype=torch.float64)[None, :]
    dct = torch.cos(torch.pi / n * (m + 0.5) * k) / n
    return (logs.double() @ dct.T)[:, 1:].float()


def mel_cepstrum(wav: Tensor, order: int = MCEP_ORDER) -> Tensor:
    """Mel-cepstra c1..c_order (frames, order) of a wave (T,) (`mel_cepstrum_of_log_mel` of its log-mel)."""
    return mel_cepstrum_of_log_mel(log_mel(wav.float()), order)


def dtw_path(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost monotonic alignment (steps (1,0), (0,1), (1,1)) of a (N, M) cost matrix."""
    n, m = costs.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    # Anti-diagonal sweep: every cell of one diagonal depends only on the two before it (vectorised).
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = costs[i - 1, j - 1] + best
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    rows, cols = np.array(path[::-1]).T
    return rows, cols


def cepstral_distortion(estimate: Tensor, reference: Tensor) -> float:
    """MCD in dB of two mel-cepstrum sequences (N, D), (M, D) after DTW: mean (10 / ln 10)·√(2·Σ Δc²)."""
    a, b = estimate.double().numpy(), reference.double().numpy()
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    rows, cols = dtw_path(distances)
    return float(((10.0 / np.log(10.0)) * np.sqrt(2.0) * distances[rows, cols]).mean())


def mel_cepstral_distortion(estimate: Tensor, reference: Tensor) -> float:
    """MCD in dB between two waves (T,), their mel-cepstra aligned by DTW."""
    return cepstral_distortion(mel_cepstrum(estimate), mel_cepstrum(reference))

"""The shared synthesis analysis: log-mel, Griffin-Lim, multi-resolution STFT loss, DTW and MCD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechrep.audio import synthesis as S

pytestmark = pytest.mark.usefixtures("one_thread")


def _chirp(seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    t = torch.arange(int(seconds * S.SAMPLE_RATE)) / S.SAMPLE_RATE
    noise = torch.randn(len(t), generator=torch.Generator().manual_seed(seed)) * 0.01
    return 0.3 * torch.sin(2 * torch.pi * (200 + 800 * t) * t) + noise


def test_log_mel_shape_and_frames() -> None:
    wav = _chirp()
    mels = S.log_mel(wav)
    assert mels.shape == (len(wav) // S.HOP + 1, S.NUM_MELS)
    assert S.log_mel(wav[None]).shape == (1, *mels.shape)


def test_griffin_lim_reconstructs_the_magnitudes() -> None:
    wav = _chirp()
    rebuilt = S.griffin_lim_from_log_mel(S.log_mel(wav), iterations=32, length=len(wav))
    assert rebuilt.shape == wav.shape and torch.isfinite(rebuilt).all()
    # phase differs, the spectrum does not: log-mel L1 far below that of another signal
    other = _chirp(seed=1)[None] * 0.1
    assert float(S.mel_l1_loss(rebuilt[None], wav[None])) < 0.5 * float(S.mel_l1_loss(other, wav[None]))


def test_multi_resolution_stft_loss_is_zero_on_identity_and_grows_with_noise() -> None:
    wav = _chirp()[None]
    assert float(S.multi_resolution_stft_loss(wav, wav)) == pytest.approx(0.0, abs=1e-6)
    small = S.multi_resolution_stft_loss(wav + 0.01 * torch.randn_like(wav), wav)
    large = S.multi_resolution_stft_loss(wav + 0.1 * torch.randn_like(wav), wav)
    assert 0 < float(small) < float(large)


def test_dtw_path_matches_brute_force_cost() -> None:
    costs = np.random.default_rng(0).random((6, 9))
    rows, cols = S.dtw_path(costs)
    acc = np.full((7, 10), np.inf)
    acc[0, 0] = 0
    for i in range(1, 7):
        for j in range(1, 10):
            acc[i, j] = costs[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    assert costs[rows, cols].sum() == pytest.approx(acc[6, 9])
    assert (rows[0], cols[0], rows[-1], cols[-1]) == (0, 0, 5, 8)
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)


def test_mcd_is_zero_for_the_same_wave_and_tolerates_time_stretch() -> None:
    wav = _chirp(1.0)
    assert S.mel_cepstral_distortion(wav, wav) == pytest.approx(0.0, abs=1e-6)
    slowed = torch.nn.functional.interpolate(wav[None, None], scale_factor=1.2, mode="linear")[0, 0]
    other = _chirp(1.0, seed=3).flip(0)
    assert S.mel_cepstral_distortion(slowed, wav) < S.mel_cepstral_distortion(other, wav)

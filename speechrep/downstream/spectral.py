"""The STFT side of SE and SS: waves ↔ (B, T, F) spectra, mask targets and the masked spectral loss.

Both tasks put a [0, 1] mask per source on the mixture's STFT (n_fft 512, hop 160, Hann, centred: one frame
per 10 ms like a 160-stride upstream), train it towards the phase-sensitive target with `masked_mse`, and
invert the masked spectrum with the mixture's phase.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from torch import Tensor, nn

from speechrep.errors import SpeechrepError
from speechrep.upstream.base import padding_mask

if TYPE_CHECKING:  # features imports the upstream side, which heads (importing this module) need not load
    from speechrep.downstream.features import FeatureBatch

N_FFT = 512
HOP = 160  # 10 ms STFT frames


def stft(wavs: Tensor, n_fft: int = N_FFT, hop_length: int = HOP) -> Tensor:
    """(B, L) waves → (B, T, n_fft // 2 + 1) complex spectra, Hann window, centred: T = L // hop + 1."""
    window = torch.hann_window(n_fft, device=wavs.device, dtype=wavs.dtype)
    spectrum = torch.stft(wavs, n_fft, hop_length, window=window, center=True, return_complex=True)
    return spectrum.transpose(1, 2)


def istft(spectrum: Tensor, length: int, n_fft: int = N_FFT, hop_length: int = HOP) -> Tensor:
    """(B, T, F) complex spectra → (B, length) waves; inverts `stft` with the same settings."""
    window = torch.hann_window(n_fft, device=spectrum.device, dtype=spectrum.real.dtype)
    return torch.istft(spectrum.transpose(1, 2), n_fft, hop_length, window=window, center=True, length=length)


def stft_lengths(wave_lengths: Tensor) -> Tensor:
    """Valid STFT frames of waves of these lengths (centred frames: L // hop + 1)."""
    return wave_lengths // HOP + 1


def match_frames(frames: Tensor, num_frames: int, dim: int = 1) -> Tensor:
    """Trim, or pad by repeating the last frame, along `dim` to exactly `num_frames` frames."""
    have = frames.shape[dim]
    if have >= num_frames:
        return frames.narrow(dim, 0, num_frames)
    last = frames.narrow(dim, have - 1, 1)
    repeat = [1] * frames.dim()
    repeat[dim] = num_frames - have
    return torch.cat([frames, last.repeat(*repeat)], dim=dim)


def load_waves(cuts: CutSet, recording_field: str | None, device: torch.device,
               length: int | None = None) -> tuple[Tensor, Tensor]:
    """Padded (B, L) waves of the cuts' audio, or of a Recording field such as `clean`, and their lengths.

    `length` trims or zero-pads the batch to L samples (a reference resampled on load may differ by one).
    """
    try:
        waves, lengths = collate_audio(cuts, recording_field=recording_field)
    except (AttributeError, KeyError, ValueError) as error:
        what = f"recording field {recording_field!r}" if recording_field else "audio"
        raise SpeechrepError(f"cuts {list(cuts.ids)[:3]}: cannot load the {what} ({error})") from None
    if length is not None:
        waves = F.pad(waves, (0, max(0, length - waves.shape[1])))[:, :length]
    return waves.float().to(device), lengths.long().to(device)


def masks_and_mixture(model: nn.Module, batch: FeatureBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A mask head's (B, S, T, F) masks on a batch's mixture (its own audio), the mixture waves, their
    (B, T, F) spectra and the wave lengths; the masks are trimmed or padded to the spectra's frames."""
    masks, _ = model(batch)
    mixture, lengths = load_waves(batch.cuts, None, masks.device)
    spectrum = stft(mixture)
    return match_frames(masks, spectrum.shape[1], dim=2), mixture, spectrum, lengths


def phase_sensitive_target(source: Tensor, mixture: Tensor) -> Tensor:
    """|S|·cos(∠S − ∠X) clipped to [0, |X|]: the best magnitude a [0, 1] mask on |X| can aim for."""
    magnitude = mixture.abs()
    projection = (source * mixture.conj()).real / magnitude.clamp(min=1e-8)
    return torch.minimum(projection.clamp(min=0.0), magnitude)


def masked_mse(estimate: Tensor, target: Tensor, frame_lengths: Tensor) -> Tensor:
    """(B, ...) mean squared error over the valid frames of (B, ..., T, F) spectra."""
    valid = padding_mask(frame_lengths, estimate.shape[-2]).to(estimate.dtype)
    valid = valid.view(valid.shape[0], *([1] * (estimate.dim() - 3)), valid.shape[1], 1)
    error = (estimate - target).pow(2) * valid
    return error.sum(dim=(-1, -2)) / (valid.sum(dim=(-1, -2)) * estimate.shape[-1])

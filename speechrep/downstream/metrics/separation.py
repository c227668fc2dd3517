"""Enhancement and separation metrics: SI-SDR (and its improvement), PESQ (wide band), STOI, and PIT.

SI-SDR (Le Roux et al., 2019) removes the means, projects the estimate on the reference and compares the
projection to the residual, in dB; a scaled copy of the reference scores the same as the reference itself,
which is capped at `max_db` (100 dB). PESQ and STOI wrap the `pesq` (ITU-T P.862.2 wide band, 16 kHz)
and `pystoi` packages. `pit_assign` finds, for each batch item, the estimate-to-reference permutation with the
lowest mean pairwise loss by scoring all S! permutations at once (S = 2 or 3 gives 2 or 6).
"""
from __future__ import annotations

import itertools

import numpy as np
import pesq as pesq_lib
import pystoi
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from speechrep.errors import AudioError, SpeechrepError


def si_sdr(estimate: Tensor, reference: Tensor, max_db: float = 100.0) -> Tensor:
    """Scale-invariant SDR in dB over the last axis, at most `max_db`; leading axes broadcast.

    The cap is relative to the target energy, so a perfect estimate scores `max_db` at any scale.
    """
    tiny = torch.finfo(estimate.dtype).tiny  # only keeps silent inputs finite (0 dB)
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + tiny)
    target_energy = (scale * reference).pow(2).sum(-1)
    noise_energy = (estimate - scale * reference).pow(2).sum(-1)
    floor = 10 ** (-max_db / 10) * target_energy
    return 10 * torch.log10((target_energy + tiny) / (noise_energy + floor + tiny))


def si_sdr_improvement(estimate: Tensor, reference: Tensor, mixture: Tensor) -> Tensor:
    """SI-SDRi: SI-SDR of the estimate minus SI-SDR of the unprocessed mixture, against the same reference."""
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


def _permutations(num_sources: int, device: torch.device) -> Tensor:
    return torch.tensor(list(itertools.permutations(range(num_sources))), device=device)


def pit_assign(pairwise_loss: Tensor) -> tuple[Tensor, Tensor]:
    """Best permutation per item of (B, S_est, S_ref) losses → (min mean loss (B,), perm (B, S)).

    `perm[b, j]` is the estimate assigned to reference j; `estimates.gather` with it reorders the estimates.
    """
    if pairwise_loss.dim() != 3 or pairwise_loss.shape[1] != pairwise_loss.shape[2]:
        raise SpeechrepError(f"PIT: expected (B, S, S) pairwise losses, got {tuple(pairwise_loss.shape)}")
    num_sources = pairwise_loss.shape[-1]
    perms = _permutations(num_sources, pairwise_loss.device)  # (P, S)
    refs = torch.arange(num_sources, device=pairwise_loss.device)
    per_perm = pairwise_loss[:, perms, refs].mean(-1)  # (B, P): loss of estimate perms[p, j] vs reference j
    best_loss, best = per_perm.min(dim=1)
    return best_loss, perms[best]


def reorder_sources(estimates: Tensor, perm: Tensor) -> Tensor:
    """Reorder (B, S, ...) estimates so that source j is the one `perm` assigned to reference j."""
    index = perm.view(*perm.shape, *([1] * (estimates.dim() - 2))).expand_as(estimates)
    return estimates.gather(1, index)


def pit_loss(estimates: Tensor, references: Tensor) -> tuple[Tensor, Tensor]:
    """Permutation-invariant negative SI-SDR of (B, S, T) waveforms → (mean loss, perm (B, S))."""
    if estimates.shape != references.shape or estimates.dim() != 3:
        raise SpeechrepError(
            f"PIT: estimates {tuple(estimates.shape)} vs references {tuple(references.shape)}"
        )
    pairwise = -si_sdr(estimates[:, :, None, :], references[:, None, :, :])
    best_loss, perm = pit_assign(pairwise)
    return best_loss.mean(), perm


def _checked_pair(
    reference: ArrayLike, degraded: ArrayLike, sample_rate: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64).ravel()
    degraded = np.asarray(degraded, dtype=np.float64).ravel()
    if sample_rate != 16000:
        raise AudioError(f"{name}: needs 16 kHz audio, got {sample_rate} Hz (resample first)")
    if reference.shape != degraded.shape:
        raise AudioError(f"{name}: reference has {reference.size} samples, degraded {degraded.size}")
    if not (np.isfinite(reference).all() and np.isfinite(degraded).all()):
        raise AudioError(f"{name}: audio contains NaN or Inf")
    if not np.abs(reference).max(initial=0.0) > 0:
        raise AudioError(f"{name}: the reference is silent")
    return reference, degraded


def pesq_wb(reference: ArrayLike, degraded: ArrayLike, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0 to 4.64) of a degraded signal against its clean reference."""
    reference, degraded = _checked_pair(reference, degraded, sample_rate, "PESQ")
    try:
        return float(pesq_lib.pesq(sample_rate, reference, degraded, "wb"))
    except pesq_lib.PesqError as error:
        message = error.args[0] if error.args else ""
        message = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
        raise AudioError(f"PESQ: {type(error).__name__}: {message}") from None


def stoi(
    reference: ArrayLike, degraded: ArrayLike, sample_rate: int = 16000, extended: bool = False
) -> float:
    """Short-time objective intelligibility (0 to 1; `extended` for ESTOI) of a degraded signal."""
    reference, degraded = _checked_pair(reference, degraded, sample_rate, "STOI")
    return float(pystoi.stoi(reference, degraded, sample_rate, extended=extended))

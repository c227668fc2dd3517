"""Shared parts of the joint-embedding methods on log-mel views (BYOL-A, Barlow Twins, VICReg, DeLoRes-S).

Views (BYOL-A, Niizumi et al. 2021, https://arxiv.org/abs/2103.06695): from each utterance one random segment
of `segment_frames` log-mel frames (0.96 s), already standardised with corpus statistics by the encoder
("pre-normalisation"); two views of it, each by mixup with a memory of past segments (in the linear domain:
log((1 − λ)·exp(x) + λ·exp(m)), λ ~ U(0, `mixup_ratio`)) and a random resize crop (a crop of 0.6–1.5× the
segment's frequency and time size taken from a canvas that pads time to 1.5× with zeros, resized back
bicubically), then standardised over the batch ("post-normalisation", BYOL-A's `NormalizeBatch`). In eval
mode the mixup partner is another segment of the same batch and the memory is left alone, so a dev loss under
a fixed seed is reproducible.

Losses, transcribed from the papers: `byol_loss` (2 − 2·cos), `barlow_twins_loss` (Zbontar et al. 2021,
Algorithm 1), `vicreg_loss` (Bardes et al. 2022, Algorithm 1). `CollapseMonitor` turns a batch of embeddings
into scalars (per-dimension std, mean |off-diagonal correlation|, effective rank) and warns once per collapse.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.data.batching import AudioBatch

log = logging.getLogger(__name__)


@dataclass
class ViewConfig:
    """How BYOL-A makes two views of a log-mel segment (the paper's settings)."""

    segment_frames: int = 96  # 0.96 s random crop of each utterance (shorter ones are zero-padded)
    mixup_ratio: float = 0.4  # λ ~ U(0, mixup_ratio); 0 turns mixup off
    memory_size: int = 2048  # past segments to mix with
    virtual_time: float = 1.5  # the crop canvas: the segment padded with zeros to this many times its length
    virtual_freq: float = 1.0
    crop_min: float = 0.6  # crop size as a share of the segment's (per axis), clipped to the canvas
    crop_max: float = 1.5
    post_norm: bool = True  # standardise each view over the batch


def random_segments(feats: Tensor, lengths: Tensor, frames: int) -> Tensor:
    """(B, frames, F) random windows of (B, T, F) features, one per utterance, within its valid frames;
    an utterance shorter than `frames` is taken whole and zero-padded."""
    room = (lengths - frames).clamp(min=0)
    start = (torch.rand(len(lengths), device=feats.device) * (room + 1)).long().clamp(max=room)
    index = start[:, None] + torch.arange(frames, device=feats.device)
    valid = index < lengths[:, None]
    index = index.clamp(max=feats.shape[1] - 1)
    picked = feats.gather(1, index[..., None].expand(-1, -1, feats.shape[2]))
    return picked * valid[..., None].to(feats.dtype)


def random_resize_crop(x: Tensor, cfg: ViewConfig) -> Tensor:
    """BYOL-A's random resize crop of (B, F, T) log-mel, one crop per item, vectorised with `grid_sample`.

    The item sits centred on a zero canvas of (virtual_freq·F, virtual_time·T); a crop of (h, w), each
    U(crop_min, crop_max) times the item's size and clipped to the canvas, is placed uniformly on the canvas
    and resized back to (F, T) bicubically (align_corners, as the authors' `F.interpolate`)."""
    b, f, t = x.shape
    dev = x.device
    canvas_h, canvas_w = int(cfg.virtual_freq * f), int(cfg.virtual_time * t)
    span = cfg.crop_max - cfg.crop_min
    h = ((torch.rand(b, device=dev) * span + cfg.crop_min) * f).long().clamp(1, canvas_h)
    w = ((torch.rand(b, device=dev) * span + cfg.crop_min) * t).long().clamp(1, canvas_w)
    i = (torch.rand(b, device=dev) * (canvas_h - h + 1)).long().clamp(max=canvas_h - h)
    j = (torch.rand(b, device=dev) * (canvas_w - w + 1)).long().clamp(max=canvas_w - w)
    # output pixel u ↦ canvas row i + u·(h − 1)/(F − 1) ↦ item row minus the canvas margin
    u = torch.arange(f, device=dev) / max(f - 1, 1)
    v = torch.arange(t, device=dev) / max(t - 1, 1)
    rows = i[:, None] + u * (h[:, None] - 1) - (canvas_h - f) // 2
    cols = j[:, None] + v * (w[:, None] - 1) - (canvas_w - t) // 2
    rows = 2 * rows / max(f - 1, 1) - 1  # grid_sample's coordinates: −1 … 1 over the item (align_corners)
    cols = 2 * cols / max(t - 1, 1) - 1
    grid = torch.stack(torch.broadcast_tensors(cols[:, None, :], rows[:, :, None]), dim=-1)
    out = F.grid_sample(x[:, None], grid.to(x.dtype), mode="bicubic", padding_mode="zeros",
                        align_corners=True)
    return out[:, 0]


def log_mixup(x: Tensor, partner: Tensor, ratio: float) -> Tensor:
    """BYOL-A's mixup of log-mel in the linear domain: log((1 − λ)·eˣ + λ·eᵐ), λ ~ U(0, ratio) per item."""
    lam = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) * ratio
    eps = torch.finfo(x.dtype).eps
    return torch.log((1 - lam) * x.exp() + lam * partner.exp() + eps)


def batch_standardise(x: Tensor) -> Tensor:
    """BYOL-A's post-normalisation: (x − mean) / std over the whole batch."""
    return (x - x.mean()) / x.std().clamp(min=torch.finfo(x.dtype).eps)


class LogMelViews(nn.Module):
    """Two augmented views (B, F, T) of a random segment of each utterance; keeps the mixup memory."""

    def __init__(self, cfg: ViewConfig, num_mel_bins: int):
        super().__init__()
        self.cfg = cfg
        # a buffer, so that the memory is in the training checkpoint (exact resume); never exported
        self.register_buffer("memory", torch.zeros(cfg.memory_size, num_mel_bins, cfg.segment_frames))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def _augment(self, segment: Tensor) -> Tensor:
        cfg = self.cfg
        x = segment
        if cfg.mixup_ratio > 0:
            n = min(int(self.filled), self.memory.shape[0])
            if self.training and n > 0:
                partner = self.memory[torch.randint(0, n, (len(x),), device=x.device)]
                x = log_mixup(x, partner, cfg.mixup_ratio)
            elif not self.training and len(x) > 1:
                x = log_mixup(x, x.roll(1, 0), cfg.mixup_ratio)
        x = random_resize_crop(x, cfg)
        return batch_standardise(x) if cfg.post_norm else x

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Views of the (B, T, F) normalised log-mel: one segment per utterance, augmented twice."""
        segment = random_segments(feats.detach(), lengths, self.cfg.segment_frames).transpose(1, 2)
        one, two = self._augment(segment), self._augment(segment)
        if self.training and self.cfg.mixup_ratio > 0:
            self._remember(segment)
        return one, two

    @torch.no_grad()
    def _remember(self, segment: Tensor) -> None:
        """Append the batch's segments to the ring memory (the oldest are overwritten)."""
        size = self.memory.shape[0]
        keep = segment[-size:]
        at = (int(self.filled) + torch.arange(len(keep), device=keep.device)) % size
        # `filled` counts every segment ever stored; the first `min(filled, size)` slots are valid
        self.memory[at] = keep.to(self.memory.dtype)
        self.filled.add_(len(keep))


def make_views(upstream: nn.Module, views: LogMelViews, batch: AudioBatch) -> tuple[Tensor, Tensor]:
    """The two augmented views (B, F, T) of a segment of each utterance of `batch` (the encoder's log-mel)."""
    with torch.no_grad():
        feats, lengths = upstream.log_mel(batch.wavs, batch.wav_lens)
    return views(feats, lengths)


def embed(encoder: nn.Module, view: Tensor) -> Tensor:
    """The encoder's utterance embedding (B, d) of a (B, F, T) view: its last layer, mean + max over time.
    Each view goes through the encoder on its own, so batch norm sees one view at a time (as the papers)."""
    frames = view.transpose(1, 2)
    full = torch.full((len(frames),), frames.shape[1], dtype=torch.long, device=frames.device)
    out = encoder.forward_features(frames, full)
    return encoder.pool(out.hidden_states[-1], out.lengths)


def mlp(dims: list[int], last_norm: bool = False) -> nn.Sequential:
    """Linear layers of widths `dims` (input first) with batch norm and ReLU between them (BYOL/Barlow/VICReg
    projector); `last_norm` ends with a batch norm without affine parameters."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = k == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=last))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    if last_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """(N,) BYOL's regression loss 2 − 2·cos(p, z) between predictions and (stop-gradient) targets."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambd: float = 5e-3, eps: float = 1e-12) -> Tensor:
    """Barlow Twins (Algorithm 1): standardise each view over the batch (unbiased std), cross-correlation
    c = z_aᵀ z_b / N, loss Σᵢ (1 − cᵢᵢ)² + λ Σᵢ≠ⱼ cᵢⱼ². (The released code standardises with BatchNorm1d, a
    biased std; `eps` only guards a dimension that is constant.)"""
    n = z_a.shape[0]
    z_a = (z_a - z_a.mean(0)) / z_a.std(0).clamp(min=eps)
    z_b = (z_b - z_b.mean(0)) / z_b.std(0).clamp(min=eps)
    c = z_a.T @ z_b / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diag + lambd * off_diagonal(c).pow(2).sum()


def vicreg_loss(x: Tensor, y: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, gamma: float = 1.0,
                eps: float = 1e-4) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg (Algorithm 1): λ·MSE(x, y) + μ·[mean relu(γ − std(x)) + mean relu(γ − std(y))] + ν·[Σ off-diag
    cov(x)² / D + Σ off-diag cov(y)² / D], std = sqrt(var + ε) (unbiased); returns the loss and its terms.
    (The released code halves the variance term; the paper's algorithm does not.)"""
    n, d = x.shape
    sim = F.mse_loss(x, y)
    std_x, std_y = torch.sqrt(x.var(dim=0) + eps), torch.sqrt(y.var(dim=0) + eps)
    std = F.relu(gamma - std_x).mean() + F.relu(gamma - std_y).mean()
    x, y = x - x.mean(0), y - y.mean(0)
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    cov = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    loss = sim_coeff * sim + std_coeff * std + cov_coeff * cov
    return loss, {"invariance": sim, "variance": std, "covariance": cov}


def collapse_statistics(z: Tensor) -> dict[str, float]:
    """Collapse scalars of (N, D) embeddings.

    `std_mean`/`std_min`: per-dimension std over the batch of the L2-normalised embeddings, times sqrt(D)
    (about 1 for isotropic embeddings, 0 when every item maps to the same vector); `offdiag_corr`: mean
    |off-diagonal| of the D×D correlation matrix (0 decorrelated, 1 redundant); `eff_rank`: effective rank
    (Roy & Vetterli 2007, as RankMe) exp(H(p)) of the normalised singular values p of the uncentred
    embeddings, between 1 (collapsed) and min(N, D)."""
    z = z.detach().float()
    n, d = z.shape
    unit = F.normalize(z, dim=1)
    std = unit.std(0) * d ** 0.5 if n > 1 else torch.zeros(d, device=z.device)
    centred = z - z.mean(0)
    scale = centred.norm(dim=0)
    live = scale > 1e-8 * max(float(scale.max()), 1e-30)
    if int(live.sum()) > 1 and n > 1:
        unit_cols = centred[:, live] / scale[live]
        corr = unit_cols.T @ unit_cols
        offdiag = float(off_diagonal(corr).abs().mean())
    else:
        offdiag = 1.0 if n > 1 else float("nan")
    sv = torch.linalg.svdvals(z)
    p = sv / sv.sum().clamp(min=1e-12)
    entropy = -(p * p.clamp(min=1e-12).log()).sum()
    return {"std_mean": float(std.mean()), "std_min": float(std.min()), "offdiag_corr": offdiag,
            "eff_rank": float(entropy.exp())}


class CollapseMonitor:
    """`collapse_statistics` of each batch's embeddings (prefixed) and one warning when they collapse.

    Collapsed: mean normalised std below `min_std`, or effective rank below `min_rank_fraction` of the
    largest rank the batch allows (min(N, D)). Warned on entering that state, again only after a recovery."""

    def __init__(self, prefix: str = "emb_", min_std: float = 0.05, min_rank_fraction: float = 0.1):
        self.prefix, self.min_std, self.min_rank_fraction = prefix, min_std, min_rank_fraction
        self.collapsed = False

    def __call__(self, z: Tensor) -> dict[str, float]:
        """Scalars of one batch of (N, D) embeddings; logs a warning on a collapse."""
        stats = collapse_statistics(z)
        limit = self.min_rank_fraction * min(z.shape)
        collapsed = stats["std_mean"] < self.min_std or stats["eff_rank"] < max(limit, 1.0 + 1e-3)
        if collapsed and not self.collapsed:
            log.warning("embedding collapse: normalised std %.4f (min %.3f), effective rank %.2f of at most "
                        "%d (min %.2f), mean |off-diagonal correlation| %.3f", stats["std_mean"],
                        self.min_std, stats["eff_rank"], min(z.shape), limit, stats["offdiag_corr"])
        self.collapsed = collapsed
        return {self.prefix + k: v for k, v in stats.items()}

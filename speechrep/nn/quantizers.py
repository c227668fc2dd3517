"""Vector quantizers: Gumbel-softmax product codebooks (VQ-APC, NPC, vq-wav2vec, wav2vec 2.0) and
nearest-neighbour (k-means / VQ-VAE) codebooks, single or grouped (vq-wav2vec)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """Quantized vectors, chosen code indices and codebook usage statistics."""

    quantized: Tensor  # (B, T, code_dim)
    codes: Tensor  # (B, T, groups) long
    perplexity: Tensor  # scalar: sum over groups of exp(entropy of the mean code distribution)
    loss: Tensor  # scalar auxiliary loss (diversity for Gumbel, codebook + commitment for nearest neighbour)


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over all leading (B, T) positions, counting only those where `mask` is True."""
    flat = values.flatten(0, 1)
    if mask is None:
        return flat.mean(0)
    keep = mask.flatten().to(values.dtype)
    return (flat * keep.view(-1, *([1] * (flat.dim() - 1)))).sum(0) / keep.sum().clamp(min=1)


def _perplexity(probs: Tensor, mask: Tensor | None) -> Tensor:
    """Sum over groups of exp(entropy) of the average code distribution; probs is (B, T, G, V)."""
    mean = _masked_mean(probs, mask)
    return torch.exp(-(mean * torch.log(mean + 1e-7)).sum(-1)).sum()


class GroupedLinear(nn.Module):
    """Block-diagonal linear map: output slice g depends only on input slice g."""

    def __init__(self, in_features: int, out_features: int, groups: int):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, in_features // groups, out_features // groups))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) → (..., out_features)."""
        out = torch.einsum("...gi,gio->...go", x.unflatten(-1, (self.groups, -1)), self.weight)
        return out.flatten(-2) + self.bias


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer: `groups` codebooks of `entries` vectors, picked by Gumbel-softmax over a linear map.

    With groups=1 it is the VQ layer of VQ-APC/NPC (Chung et al. 2020); with groups=2, entries=320 it is the
    wav2vec 2.0 quantizer. Training samples hard Gumbel codes with straight-through gradients; evaluation
    takes the argmax (still straight-through, so the projection gets gradients in both modes). `temperature`
    is a plain attribute so a schedule can anneal it. `loss`: wav2vec 2.0 diversity loss (G·V − ppl) / G·V.
    `grouped_input=True` makes group g read only the g-th slice of the input (the multi-group VQ layers of
    VQ-APC/NPC); otherwise every group reads the whole input (wav2vec 2.0).
    vq-wav2vec's options (fairseq `vq_depth`, `combine_groups`): `projection_depth` > 1 puts that many linear
    layers (width `projection_factor` × input_dim, `activation` between them) before the logits, and
    `shared_codebook=True` gives every group the same `entries` vectors (codebook (1, entries, code_dim / G)).
    """

    def __init__(self, input_dim: int, code_dim: int, entries: int, groups: int = 1, temperature: float = 1.0,
                 grouped_input: bool = False, projection_depth: int = 1, projection_factor: int = 2,
                 activation: nn.Module | None = None, shared_codebook: bool = False):
        super().__init__()
        if code_dim % groups or (grouped_input and input_dim % groups):
            raise ValueError(f"code_dim {code_dim} (and input_dim {input_dim} when grouped_input) must be "
                             f"divisible by groups {groups}")
        if projection_depth > 1 and grouped_input:
            raise ValueError("projection_depth > 1 does not combine with grouped_input")
        self.groups, self.entries, self.temperature = groups, entries, temperature
        if projection_depth > 1:  # fairseq's layout: Sequential(Sequential(Linear, act), ..., Linear)
            inner = input_dim * projection_factor
            act = activation if activation is not None else nn.GELU()
            self.weight_proj = nn.Sequential(
                *[nn.Sequential(nn.Linear(input_dim if i == 0 else inner, inner), act)
                  for i in range(projection_depth - 1)],
                nn.Linear(inner, groups * entries),
            )
        else:
            self.weight_proj = (GroupedLinear(input_dim, groups * entries, groups) if grouped_input
                                else nn.Linear(input_dim, groups * entries))
        books = 1 if shared_codebook else groups
        self.codebook = nn.Parameter(torch.empty(books, entries, code_dim // groups).uniform_())
        if projection_depth == 1:
            # wav2vec 2.0's N(0, 1); VQ-APC/NPC keep a default Linear's scale, as their references do
            # (N(0, 1) collapses their codebooks); deeper projections (vq-wav2vec) keep fairseq's default init
            if not grouped_input:
                nn.init.normal_(self.weight_proj.weight, std=1.0)
            nn.init.zeros_(self.weight_proj.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantize x (B, T, input_dim); `mask` (B, T) True on valid frames restricts the usage statistics."""
        logits = self.weight_proj(x).unflatten(-1, (self.groups, self.entries))
        probs = logits.float().softmax(-1)
        if self.training:
            onehot = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True)
        else:
            hard = F.one_hot(probs.argmax(-1), self.entries).to(probs.dtype)
            onehot = hard + probs - probs.detach()
        codebook = self.codebook.expand(self.groups, -1, -1)  # a shared codebook serves every group
        quantized = torch.einsum("btgv,gvd->btgd", onehot.to(codebook.dtype), codebook).flatten(2)
        perplexity = _perplexity(probs, mask)
        total = self.groups * self.entries
        diversity = (total - perplexity) / total
        return QuantizerOutput(quantized.to(x.dtype), logits.argmax(-1), perplexity, diversity)


class NearestNeighbourQuantizer(nn.Module):
    """VQ-VAE / k-means quantizer: nearest codebook entry, straight-through gradients, codebook + commitment
    loss.

    With `groups` > 1 (vq-wav2vec's k-means) the input splits into G slices of dim / G, each quantized
    separately: the codebook is (entries, dim) with group g owning columns [g·dim/G, (g+1)·dim/G), or with
    `shared_codebook=True` (fairseq `combine_groups`) (entries, dim / G) used by every group. The loss is the
    mean squared error of the codebook (to the detached input) plus `commitment` × that of the input."""

    def __init__(self, dim: int, entries: int, commitment: float = 0.25, groups: int = 1,
                 shared_codebook: bool = False, init_std: float = 1.0):
        super().__init__()
        if dim % groups:
            raise ValueError(f"dim {dim} must be divisible by groups {groups}")
        self.groups, self.shared = groups, shared_codebook and groups > 1
        width = dim // groups if self.shared else dim
        self.codebook = nn.Parameter(torch.randn(entries, width) * init_std)
        self.commitment = commitment

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantize x (B, T, dim) to its nearest codebook entries, per group."""
        G, entries = self.groups, self.codebook.shape[0]
        slices = x.unflatten(-1, (G, -1))  # (B, T, G, d)
        books = (self.codebook[None].expand(G, -1, -1) if self.shared
                 else self.codebook.unflatten(-1, (G, -1)).transpose(0, 1))  # (G, entries, d)
        distances = torch.cdist(slices.flatten(0, 1).transpose(0, 1).float(), books.float())  # (G, B·T, V)
        codes = distances.argmin(-1).transpose(0, 1).reshape(*x.shape[:-1], G)
        chosen = torch.stack([books[g][codes[..., g]] for g in range(G)], dim=-2).flatten(-2)
        keep = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device) if mask is None else mask
        codebook_loss = _masked_mean(((chosen - x.detach()) ** 2).mean(-1, keepdim=True), keep).squeeze()
        commit_loss = _masked_mean(((x - chosen.detach()) ** 2).mean(-1, keepdim=True), keep).squeeze()
        probs = F.one_hot(codes, entries).to(x.dtype)
        return QuantizerOutput(x + (chosen - x).detach(), codes, _perplexity(probs, mask),
                               codebook_loss + self.commitment * commit_loss)

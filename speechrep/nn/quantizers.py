"""Vector quantizers: Gumbel-softmax product codebooks (VQ-APC, NPC, wav2vec 2.0) and VQ-VAE codebooks."""
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
    """

    def __init__(self, input_dim: int, code_dim: int, entries: int, groups: int = 1, temperature: float = 1.0,
                 grouped_input: bool = False):
        super().__init__()
        if code_dim % groups or (grouped_input and input_dim % groups):
            raise ValueError(f"code_dim {code_dim} (and input_dim {input_dim} when grouped_input) must be "
                             f"divisible by groups {groups}")
        self.groups, self.entries, self.temperature = groups, entries, temperature
        self.weight_proj = (GroupedLinear(input_dim, groups * entries, groups) if grouped_input
                            else nn.Linear(input_dim, groups * entries))
        self.codebook = nn.Parameter(torch.empty(groups, entries, code_dim // groups).uniform_())
        if not grouped_input:  # wav2vec 2.0's N(0, 1); VQ-APC/NPC keep a default Linear's scale, as their
            nn.init.normal_(self.weight_proj.weight, std=1.0)  # references do (N(0, 1) collapses their codebooks)
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
        quantized = torch.einsum("btgv,gvd->btgd", onehot.to(self.codebook.dtype), self.codebook).flatten(2)
        perplexity = _perplexity(probs, mask)
        total = self.groups * self.entries
        diversity = (total - perplexity) / total
        return QuantizerOutput(quantized.to(x.dtype), logits.argmax(-1), perplexity, diversity)


class NearestNeighbourQuantizer(nn.Module):
    """VQ-VAE quantizer: nearest codebook vector, straight-through gradients, codebook + commitment loss."""

    def __init__(self, dim: int, entries: int, commitment: float = 0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(entries, dim))
        self.commitment = commitment

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantize x (B, T, dim) to its nearest codebook entries."""
        distances = torch.cdist(x.flatten(0, 1).float(), self.codebook.float())
        codes = distances.argmin(-1).view(x.shape[:-1])
        chosen = self.codebook[codes]
        keep = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device) if mask is None else mask
        codebook_loss = _masked_mean(((chosen - x.detach()) ** 2).mean(-1, keepdim=True), keep).squeeze()
        commit_loss = _masked_mean(((x - chosen.detach()) ** 2).mean(-1, keepdim=True), keep).squeeze()
        probs = F.one_hot(codes, self.codebook.shape[0]).to(x.dtype)[:, :, None]
        return QuantizerOutput(x + (chosen - x).detach(), codes[..., None], _perplexity(probs, mask),
                               codebook_loss + self.commitment * commit_loss)

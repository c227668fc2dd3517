"""Transformer encoder of the wav2vec 2.0 family: SDPA self-attention, convolutional positions, optional gated
relative position bias (WavLM), post-LN (base) and pre-LN "layer-norm-first" (large) layers.

Head counts and FFN sizes may differ per layer (pruned or searched models); a layer with 0 heads skips its
attention block and one with 0 FFN units its feed-forward block (their residual branch is zero). Attention
maps are computed only on request (`attentions=` list), so the default path stays on SDPA.

"Identity attention" (skip-ahead, `speechrep.compress.skip`): a layer whose attention map is replaced by the
identity lets every frame attend only to itself, so its attention output is out_proj(v_proj(x)), folded into
one D×D linear (`IdentityAttention`): T·D² MACs and no attention products. Such a layer has no heads whatever
its head count says, ignores WavLM's relative position bias and a `prefix`, and passes prompts through as
frames; its map, when requested, is the identity, (B, 1, T, T).

Two optional inputs serve parameter-efficient tuning (`speechrep.tuning.prompts`), and change nothing when
left at None: `SelfAttention(..., prefix=(keys, values))` lets every query also attend to learned key/value
positions, and `TransformerEncoder(..., prompts=)` puts learned positions in front of the layers' input.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _PositionalConvBlock(nn.Module):
    """Grouped "same" convolution over time → optional non-affine layer norm → GELU."""

    def __init__(self, dim: int, kernel: int, groups: int, weight_norm: bool, layer_norm: bool):
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        # weight norm over the kernel axis (dim=2), as the original wav2vec 2.0 positional convolution
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2) if weight_norm else conv
        self.trim = 1 if kernel % 2 == 0 else 0  # an even kernel with padding k//2 yields one extra frame
        self.norm = nn.LayerNorm(dim, elementwise_affine=False) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        """x (B, D, T) → (B, D, T)."""
        x = self.conv(x)
        if self.trim:
            x = x[:, :, : -self.trim]
        if self.norm is not None:
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class ConvPositionalEmbedding(nn.Module):
    """Relative positions from a convolution over the sequence: depth 1 = one weight-normed wide conv
    (wav2vec 2.0, HuBERT, WavLM); depth > 1 = a stack of narrow convs with layer norm (data2vec)."""

    def __init__(self, dim: int, kernel: int = 128, groups: int = 16, depth: int = 1):
        super().__init__()
        single = depth == 1
        self.layers = nn.ModuleList(
            _PositionalConvBlock(dim, kernel, groups, weight_norm=single, layer_norm=not single)
            for _ in range(depth)
        )

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x (B, T, D) with padded frames already zero → positional term (B, T, D)."""
        x = x.transpose(1, 2)
        for index, layer in enumerate(self.layers):
            if index > 0 and valid is not None:
                # re-zero padding between stacked convs so valid frames see what a lone utterance would see
                x = x * valid[:, None, :].to(x.dtype)
            x = layer(x)
        return x.transpose(1, 2)


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device: torch.device
) -> Tensor:
    """(T, T) bucket index of key position minus query position (T5/WavLM bidirectional log buckets)."""
    positions = torch.arange(length, device=device)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (half - max_exact)).long().clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


def valid_with(valid: Tensor | None, count: int) -> Tensor | None:
    """(B, T) valid positions with `count` always-valid positions in front (None stays None: no padding)."""
    return None if valid is None else torch.cat([valid.new_ones(valid.shape[0], count), valid], dim=1)


def prepend_prefix(k: Tensor, v: Tensor, prefix: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Keys and values (B, H, T, d) with a prefix's (P, H·d) keys and values in front: (B, H, P + T, d) each."""
    batch, heads, _, dim = k.shape

    def split(x: Tensor) -> Tensor:
        return x.view(-1, heads, dim).transpose(0, 1).expand(batch, -1, -1, -1).to(k.dtype)

    return torch.cat([split(prefix[0]), k], dim=2), torch.cat([split(prefix[1]), v], dim=2)


def prompt_input(x: Tensor, prompts: Tensor, index: int) -> Tensor:
    """Layer `index`'s input with learned prompts in front, (B, P + T, D).

    `prompts` is (P, D), shallow: put in front of layer 0's input x (B, T, D), later layers get the previous
    layer's output unchanged; or (num_layers, P, D), deep: every layer's prompt positions are replaced by its
    own (at layer 0, x has none yet)."""
    if index and prompts.dim() == 2:
        return x
    own = prompts if prompts.dim() == 2 else prompts[index]
    frames = x[:, prompts.shape[-2]:] if index else x
    return torch.cat([own.to(x.dtype).expand(x.shape[0], -1, -1), frames], dim=1)


def per_layer(value: int | Sequence[int], num_layers: int, name: str) -> tuple[int, ...]:
    """An int (every layer) or one int per layer → a tuple of `num_layers` ints."""
    if isinstance(value, int):
        return (value,) * num_layers
    values = tuple(int(v) for v in value)
    if len(values) != num_layers:
        raise ValueError(f"{name}: {len(values)} values for {num_layers} layers")
    return values


def check_identity_attention(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """The 0-based indices of the identity-attention layers as a sorted tuple; ValueError unless each is an
    int in range and none repeats."""
    if isinstance(layers, (int, str)):
        raise ValueError(f"identity_attention: expected a sequence of layer indices, got {layers!r}")
    values = tuple(layers)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_layers]
    if bad:
        raise ValueError(f"identity_attention: layer {bad[0]!r} is not a layer index in 0..{num_layers - 1}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"identity_attention: layer {repeated[0]} is listed twice")
    return tuple(sorted(values))


def check_layer_sizes(hidden_size: int, num_layers: int, num_heads: int | Sequence[int],
                      ffn_size: int | Sequence[int], head_dim: int = 0) -> None:
    """ValueError unless the sizes fit: one value per layer; without head_dim, the heads divide the width."""
    heads = per_layer(num_heads, num_layers, "num_heads")
    per_layer(ffn_size, num_layers, "ffn_size")
    if not head_dim:
        bad = sorted({h for h in heads if h and hidden_size % h})
        if bad:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_heads {bad[0]} (set head_dim)"
            )


class SelfAttention(nn.Module):
    """Multi-head self-attention via F.scaled_dot_product_attention; optional WavLM gated relative bias.

    `head_dim` (default dim // num_heads) lets a pruned layer keep its heads' width: the projections are
    dim → num_heads·head_dim → dim."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, gated_relative_bias: bool = False,
                 head_dim: int | None = None):
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
            head_dim = dim // num_heads
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)
        if gated_relative_bias:
            # WavLM: each query scales the shared bucket bias by a gate computed from its own content
            self.gate_linear = nn.Linear(self.head_dim, 8)
            self.gate_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, H·d) → (B, H, T, d)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: Tensor, valid: Tensor | None = None, position_bias: Tensor | None = None,
        attentions: list[Tensor] | None = None, prefix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, D); valid (B, T) bool keys to attend to; position_bias (H, T, T) for gated attention.

        With `attentions` (a list), the (B, H, T, T) attention probabilities are computed explicitly and
        appended to it; otherwise SDPA computes the output without materialising them. `prefix` (keys, values),
        each (P, H·d): every query also attends to these P positions, never masked and without position bias
        (their maps then have P + T key columns, the prefix first)."""
        batch, length, _ = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if prefix is not None:
            k, v = prepend_prefix(k, v, prefix)
            valid = valid_with(valid, prefix[0].shape[0])
            if position_bias is not None:
                position_bias = F.pad(position_bias, (prefix[0].shape[0], 0))  # zero bias on the prefix keys
        mask: Tensor | None = None
        if position_bias is not None:
            gates = torch.sigmoid(
                self.gate_linear(self._split(x)).view(batch, self.num_heads, length, 2, 4).sum(-1)
            )
            gate_a, gate_b = gates.chunk(2, dim=-1)
            mask = (gate_a * (gate_b * self.gate_const - 1.0) + 2.0) * position_bias[None]
            if valid is not None:
                mask = mask.masked_fill(~valid[:, None, None, :], float("-inf"))
            mask = mask.to(q.dtype)
        elif valid is not None:
            mask = valid[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        if attentions is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            weights = self.attention_weights(q, k, mask)
            attentions.append(weights)
            out = F.dropout(weights, dropout, training=self.training) @ v
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))

    @staticmethod
    def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """(B, H, T, T) softmax(q·kᵀ/√d + mask) as SDPA computes it; a bool mask is True on allowed keys."""
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        return torch.softmax(scores, dim=-1)


class IdentityAttention(nn.Module):
    """Attention replaced by the identity map: each frame attends only to itself, so the output is
    out_proj(v_proj(x)), held as ONE folded linear `proj` (W = W_out·W_v, b = W_out·b_v + b_out)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def folded(v_weight: Tensor, v_bias: Tensor, out_weight: Tensor,
               out_bias: Tensor) -> tuple[Tensor, Tensor]:
        """(W_out·W_v, W_out·b_v + b_out) in float64, then in out_weight's dtype."""
        w_v, b_v, w_o, b_o = (t.detach().double() for t in (v_weight, v_bias, out_weight, out_bias))
        return (w_o @ w_v).to(out_weight.dtype), (w_o @ b_v + b_o).to(out_weight.dtype)

    def forward(
        self, x: Tensor, valid: Tensor | None = None, position_bias: Tensor | None = None,
        attentions: list[Tensor] | None = None, prefix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, D) → (B, T, D); `valid`, `position_bias` and `prefix` change nothing (a frame's own key is
        never masked for a valid frame, its bias is irrelevant once the map is fixed). With `attentions`, the
        identity map (B, 1, T, T) is appended."""
        if attentions is not None:
            eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
            attentions.append(eye.expand(x.shape[0], 1, -1, -1))
        return self.proj(x)


class FeedForward(nn.Module):
    """Linear → GELU → dropout → linear → dropout."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) → (B, T, D)."""
        return self.dropout(self.fc2(self.activation_dropout(F.gelu(self.fc1(x)))))


class TransformerLayer(nn.Module):
    """One encoder layer; post-LN (norm after each residual) or pre-LN (norm before each sub-block).

    `num_heads=0` or `ffn_dim=0` skips that sub-block (a zero residual branch: post-LN still normalises).
    `identity_attention=True` replaces the attention by `IdentityAttention` (`self.identity`; `self.attention`
    is then None and `num_heads` is ignored)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        layer_norm_first: bool = False,
        gated_relative_bias: bool = False,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        eps: float = 1e-5,
        head_dim: int | None = None,
        identity_attention: bool = False,
    ):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        # parameters are created in the same order as before per-layer sizes existed (same initial weights)
        self.identity = IdentityAttention(dim) if identity_attention else None
        self.attention = (SelfAttention(dim, num_heads, attention_dropout, gated_relative_bias, head_dim)
                          if num_heads and not identity_attention else None)
        has_attention = bool(num_heads) or identity_attention
        self.attention_norm = nn.LayerNorm(dim, eps=eps) if has_attention or not layer_norm_first else None
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation_dropout) if ffn_dim else None
        self.ffn_norm = nn.LayerNorm(dim, eps=eps) if ffn_dim or not layer_norm_first else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, valid: Tensor | None = None, position_bias: Tensor | None = None,
        attentions: list[Tensor] | None = None,
    ) -> Tensor:
        """(B, T, D) → (B, T, D); with `attentions`, this layer's (B, H, T, T) maps are appended to it (H = 0
        without attention, the (B, 1, T, T) identity with identity attention)."""
        attention = self.attention if self.identity is None else self.identity
        if attention is None and attentions is not None:
            attentions.append(x.new_zeros(x.shape[0], 0, x.shape[1], x.shape[1]))
        if self.layer_norm_first:
            if attention is not None:
                x = x + self.dropout(attention(self.attention_norm(x), valid, position_bias, attentions))
            return x if self.ffn is None else x + self.ffn(self.ffn_norm(x))
        if attention is not None:
            x = self.attention_norm(x + self.dropout(attention(x, valid, position_bias, attentions)))
        else:
            x = self.attention_norm(x)
        return self.ffn_norm(x if self.ffn is None else x + self.ffn(x))


class TransformerEncoder(nn.Module):
    """Positional conv → (post-LN: layer norm) → layers → (pre-LN: final norm); keeps each layer's input."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int | Sequence[int],
        ffn_dim: int | Sequence[int],
        layer_norm_first: bool = False,
        pos_conv_kernel: int = 128,
        pos_conv_groups: int = 16,
        pos_conv_depth: int = 1,
        rel_pos_buckets: int = 0,
        rel_pos_max_distance: int = 800,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        layer_drop: float = 0.0,
        eps: float = 1e-5,
        head_dim: int | None = None,
        identity_attention: Sequence[int] = (),
    ):
        super().__init__()
        heads = per_layer(num_heads, num_layers, "num_heads")
        identity = set(check_identity_attention(identity_attention, num_layers))
        ffn_dims = per_layer(ffn_dim, num_layers, "ffn_size")
        self.layer_norm_first, self.layer_drop = layer_norm_first, layer_drop
        self.rel_pos_buckets, self.rel_pos_max_distance = rel_pos_buckets, rel_pos_max_distance
        self.pos_conv = ConvPositionalEmbedding(dim, pos_conv_kernel, pos_conv_groups, pos_conv_depth)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        if rel_pos_buckets:
            if len(set(heads)) > 1 or heads[0] == 0:
                raise ValueError(
                    f"relative position bias is shared by all layers: one head count, got {heads}"
                )
            self.rel_pos_embed = nn.Embedding(rel_pos_buckets, heads[0])
        gated = rel_pos_buckets > 0
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                layer_heads,
                layer_ffn,
                layer_norm_first,
                gated,
                dropout,
                attention_dropout,
                activation_dropout,
                eps,
                head_dim,
                index in identity,
            )
            for index, (layer_heads, layer_ffn) in enumerate(zip(heads, ffn_dims))
        )

    def _position_bias(self, length: int, device: torch.device) -> Tensor | None:
        """(H, T, T) bucketed relative position bias, or None without relative positions."""
        if not self.rel_pos_buckets:
            return None
        buckets = relative_position_buckets(length, self.rel_pos_buckets, self.rel_pos_max_distance, device)
        return self.rel_pos_embed(buckets).permute(2, 0, 1)

    def forward(
        self, x: Tensor, valid: Tensor | None = None, attentions: list[Tensor] | None = None,
        prompts: Tensor | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """x (B, T, D), valid (B, T) bool or None (no padding) → (input of each layer + last output, final).

        `final` is the last output after the final layer norm in the pre-LN variant (the same tensor as the
        last hidden state in the post-LN variant). With `attentions` (a list), each layer appends its
        (B, H, T, T) attention probabilities (H = 0 for a layer without attention or one skipped by layer
        drop; the (B, 1, T, T) identity for an identity-attention layer). `prompts` ((P, D) shallow or
        (num_layers, P, D) deep, see `prompt_input`) are P learned positions in front of the layers' input,
        after the positional convolution, never masked, just before the frames for the relative position bias;
        the returned states leave them out (the maps keep them: (B, H, P + T, P + T), the prompts first)."""
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)  # padded frames must not leak into the positional conv
        x = x + self.pos_conv(x, valid)
        if not self.layer_norm_first:
            x = self.norm(x)
        x = self.dropout(x)
        count = 0 if prompts is None else prompts.shape[-2]
        if count:
            valid = valid_with(valid, count)
        bias = self._position_bias(count + x.shape[1], x.device)
        hidden = [x]
        for index, layer in enumerate(self.layers):
            if prompts is not None:
                x = prompt_input(x, prompts, index)
            skip = self.training and self.layer_drop > 0 and bool(torch.rand(()) < self.layer_drop)
            if not skip:
                x = layer(x, valid, bias, attentions)
            elif attentions is not None:
                attentions.append(x.new_zeros(x.shape[0], 0, x.shape[1], x.shape[1]))
            hidden.append(x[:, count:] if count else x)
        final = self.norm(x) if self.layer_norm_first else x
        return hidden, final[:, count:] if count else final

"""`prefix` and `prompt`: learned positions that the frozen transformer attends to.

- `prefix` (prefix tuning, Li & Liang 2021, as in the JSALT 2022 efficient-tuning study): every attention layer
  gets `length` (5) learned key and value positions; every query of the utterance also attends to them. They
  are never masked and have no position (WavLM: zero relative bias on their key columns). Each `SelfAttention`
  is wrapped by a `PrefixAttention`; in the Mockingjay family, whose attention is inside its BERT layer, the
  layer is wrapped (AudioALBERT shares one layer across depth, so one prefix pair serves all its layers).
- `prompt` (prompt tuning, SpeechPrompt, Chang et al. 2022): `length` (100) learned vectors in front of the
  transformer's input, after the positional convolution or embedding (the frames' own input is unchanged);
  with `deep=true`, every layer's input prompt positions are replaced by that layer's own vectors (default
  length 8). They are never masked; with WavLM's relative bias they sit just before the frames. The returned
  hidden states leave them out: the upstream's frame grid, lengths and frame geometry stay as they are.

Unlike adapters and LoRA these change the output from the start: the vectors are drawn from N(0, 0.02²).
The transformer code takes them as optional inputs (`speechrep.nn.transformer`: `prefix=`, `prompts=`;
Mockingjay's `prompts` parameter); the modules here hold the trained vectors and pass them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.transformer import SelfAttention, TransformerEncoder
from speechrep.tuning.inserted import InsertingStrategy, replace_modules
from speechrep.upstream.mockingjay import Mockingjay, _PostLNLayer

INIT_STD = 0.02  # the learned vectors start as N(0, INIT_STD²)
PROMPT_LENGTH = 100  # shallow: 100 × 768 = 76,800 on hubert_base (SpeechPrompt: 0.08M)
DEEP_PROMPT_LENGTH = 8  # deep: 12 layers × 8 × 768 = 73,728 on hubert_base


def learned(shape: tuple[int, ...], like: nn.Module) -> nn.Parameter:
    """A parameter of `shape` drawn from N(0, INIT_STD²), on the device and in the dtype of `like`'s weights."""
    reference = next(like.parameters())
    return nn.Parameter(torch.randn(shape, device=reference.device, dtype=reference.dtype) * INIT_STD)


class PrefixAttention(nn.Module):
    """A frozen attention module (a `SelfAttention`, or a Mockingjay-family layer) and its learned prefix."""

    def __init__(self, attention: nn.Module, width: int, length: int):
        super().__init__()
        self.attention = attention
        self.prefix_key = learned((length, width), attention)
        self.prefix_value = learned((length, width), attention)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The wrapped module's output, its queries also attending to the prefix."""
        return self.attention(*args, **kwargs, prefix=(self.prefix_key, self.prefix_value))


class PromptedEncoder(nn.Module):
    """A frozen `TransformerEncoder` and its learned prompts ((P, D), or (num_layers, P, D) deep)."""

    def __init__(self, encoder: TransformerEncoder, prompts: nn.Parameter):
        super().__init__()
        self.encoder = encoder
        self.prompts = prompts

    def forward(self, x: Tensor, valid: Tensor | None = None,
                attentions: list[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """The encoder's output with the prompts in front of its layers' input (left out of the states)."""
        return self.encoder(x, valid, attentions, prompts=self.prompts)


def _check_length(strategy: str, length: int, minimum: int) -> None:
    """ConfigError unless `length` >= `minimum`."""
    if length < minimum:
        raise ConfigError(f"--tuning {strategy}: length must be >= {minimum} (got {length})")


@dataclass(frozen=True)
class PrefixOptions:
    """Prefix tuning options: the number of learned key/value positions per attention layer."""

    length: int = 5


@dataclass(frozen=True)
class PromptOptions:
    """Prompt tuning options: the number of prompt positions (0: 100 shallow, 8 deep) and whether every layer
    has its own prompts (deep) or only the first layer's input has them (shallow)."""

    length: int = 0
    deep: bool = False


class Prefix(InsertingStrategy):
    """Learned key and value prefixes in every attention layer."""

    name = "prefix"

    def __init__(self, options: PrefixOptions | None = None):
        self.options = options or PrefixOptions()
        _check_length("prefix", self.options.length, 1)

    def insert(self, upstream: nn.Module) -> None:
        """Wrap every SelfAttention (and every Mockingjay-family layer) with its prefix."""
        length = self.options.length
        replace_modules(upstream, SelfAttention, lambda a: PrefixAttention(a, a.num_heads * a.head_dim, length))
        replace_modules(upstream, _PostLNLayer, lambda a: PrefixAttention(a, a.qkv.out_features // 3, length))


class Prompt(InsertingStrategy):
    """Learned vectors in front of the transformer's input (shallow) or of every layer's input (deep)."""

    name = "prompt"

    def __init__(self, options: PromptOptions | None = None):
        self.options = options or PromptOptions()
        _check_length("prompt", self.options.length, 0)
        self.length = self.options.length or (DEEP_PROMPT_LENGTH if self.options.deep else PROMPT_LENGTH)

    def _prompts(self, num_layers: int, width: int, like: nn.Module) -> nn.Parameter:
        """New prompts for a transformer of `num_layers` layers of `width`."""
        shape = (num_layers, self.length, width) if self.options.deep else (self.length, width)
        return learned(shape, like)

    def insert(self, upstream: nn.Module) -> None:
        """Wrap the upstream's TransformerEncoder with its prompts (Mockingjay family: set its `prompts`)."""
        if isinstance(upstream, Mockingjay):
            upstream.prompts = self._prompts(upstream.config.num_layers, upstream.config.hidden_size, upstream)
            return
        wrapped = replace_modules(upstream, TransformerEncoder, lambda encoder: PromptedEncoder(
            encoder, self._prompts(len(encoder.layers), encoder.norm.normalized_shape[0], encoder)))
        if not wrapped:
            raise ConfigError(f"--tuning {self.name}: {type(upstream).__name__} has no TransformerEncoder")

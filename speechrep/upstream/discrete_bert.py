"""Discrete BERT: a BERT encoder over vq-wav2vec tokens (Baevski et al. 2020, vq-wav2vec §4 and §5,
https://arxiv.org/abs/1910.05453; Baevski, Auli and Mohamed 2019, "Effectiveness of self-supervised
pre-training for speech recognition", https://arxiv.org/abs/1911.03912).

Tokenizer: a frozen vq-wav2vec (`speechrep.upstream.wav2vec.Wav2Vec` with a Gumbel or k-means quantizer),
carried inside the model and exported with it; its parameters never train and it always runs in eval mode
(Gumbel: the argmax code), in fp32 even under autocast, so a frame gets the same token in pre-training,
vocabulary fitting and extraction. Each 10 ms frame yields G codes of V entries each.

Tokens: the G codes of a frame combine into the index c = Σ_g code_g · V^(G−1−g) (g0·V + g1 for G = 2), and
c maps to a token id through the `vocabulary` buffer, the sorted list of code combinations the model knows:
combination vocabulary[i] is token 2 + i; any other combination is <unk> (0); <mask> (1) replaces masked
input in pre-training. fairseq's vq-wav2vec + BERT likewise used a dictionary of the combined "g0-g1" tokens
seen in the training data: of V^G = 320² = 102,400 possible combinations the papers report about 13.5k
(Gumbel) and 23k (k-means) in use, so a plain g0·V + g1 index would spend most of the embedding (and the
output layer tied to it) on combinations that never occur. The pre-training method fits the vocabulary
(`vocab_size` entries, `speechrep.pretrain.discrete_bert`); a registered name with `vocab_size=0` knows every
combination (the plain index, id 2 + c), which is what a model with random weights starts from.

Encoder: token embedding (N(0, 0.02), as BERT) → convolutional positions (a grouped convolution, kernel 128,
16 groups, as wav2vec 2.0; the "Effectiveness" paper's Discrete BERT replaced the fixed positions of the
vq-wav2vec paper's BERT with it) → layer norm → post-LN Transformer layers (BERT and fairseq's RoBERTa:
`encoder_normalize_before=False`), the blocks of `speechrep.nn.transformer`. Sizes: BERT base, 12 layers ×
768, 12 heads, FFN 3072, dropout 0.1. Hidden states: the layers' input (embedding + positions, normalised),
then every layer's output, at the tokenizer's 10 ms frame rate. Padded frames are masked out of attention and
the tokenizer's group norm, so a padded batch equals its utterances run one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.transformer import TransformerEncoder, check_layer_sizes
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.registry import register_family, register_upstream
from speechrep.upstream.wav2vec import TINY, VQ, Wav2Vec, Wav2VecConfig

SPECIAL_TOKENS = ("<unk>", "<mask>")
UNK, MASK = 0, 1
MAX_PLAIN_VOCABULARY = 1 << 20  # vocab_size=0 (every combination) only while V^G stays below this


def _gumbel_tokenizer() -> Wav2VecConfig:
    """vq-wav2vec as released (fairseq's vq-wav2vec.pt): Gumbel, G = 2 × V = 320 shared entries."""
    return Wav2VecConfig(**VQ, vq_type="gumbel", vq_depth=2)


@dataclass(frozen=True)
class DiscreteBERTConfig:
    """Tokenizer architecture, vocabulary size and the BERT encoder's sizes (defaults: BERT base)."""

    tokenizer: Wav2VecConfig = field(default_factory=_gumbel_tokenizer)
    vocab_size: int = 0  # code combinations with a token of their own; 0: every one of the V^G combinations
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_size: int = 3072
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, Mapping):  # read back from an export's config.json
            from speechrep.upstream.loading import _config_from_dict

            object.__setattr__(self, "tokenizer",
                               _config_from_dict(Wav2VecConfig, self.tokenizer, "discrete_bert tokenizer"))
        if not isinstance(self.tokenizer, Wav2VecConfig) or self.tokenizer.vq_type == "none":
            raise ConfigError("discrete_bert: the tokenizer must be a vq-wav2vec with a quantizer "
                              "(vq_type gumbel or kmeans)")
        combinations = self.tokenizer.vq_vars ** self.tokenizer.vq_groups
        if combinations >= 1 << 62:
            raise ConfigError(f"discrete_bert: {self.tokenizer.vq_vars}^{self.tokenizer.vq_groups} code "
                              "combinations do not fit a 64-bit index")
        if not 0 <= self.vocab_size <= combinations:
            raise ConfigError(f"key 'vocab_size': must be in 0..{combinations} (V^G), got {self.vocab_size}")
        if self.vocab_size == 0 and combinations > MAX_PLAIN_VOCABULARY:
            raise ConfigError(f"key 'vocab_size': {combinations} code combinations are too many for one "
                              "token each; fit a vocabulary (the discrete_bert method does)")
        try:
            check_layer_sizes(self.hidden_size, self.num_layers, self.num_heads, self.ffn_size)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def vq_codes(tokenizer: Wav2Vec, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
    """((B, T', G) codes, (B,) valid frames) of a frozen vq-wav2vec: no gradient, fp32 even under autocast."""
    with torch.no_grad(), torch.autocast(wavs.device.type, enabled=False):
        z, lengths = tokenizer.encode(wavs.float(), wav_lens)
        return tokenizer.quantize(z, lengths).codes, lengths


def combine_codes(codes: Tensor, entries: int) -> Tensor:
    """(..., G) codes of `entries` values each → (...) index Σ_g code_g · entries^(G−1−g), one-to-one."""
    weights = entries ** torch.arange(codes.shape[-1] - 1, -1, -1, device=codes.device, dtype=torch.long)
    return (codes.long() * weights).sum(-1)


@register_family
class DiscreteBERT(nn.Module):
    """vq-wav2vec tokenizer (frozen) + BERT encoder (satisfies the Upstream protocol)."""

    family = "discrete_bert"
    config_class = DiscreteBERTConfig
    sample_rate = 16000

    def __init__(self, config: DiscreteBERTConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Wav2Vec(config.tokenizer).requires_grad_(False).eval()
        self.stride = self.tokenizer.stride
        self.combinations = config.tokenizer.vq_vars ** config.tokenizer.vq_groups
        # sorted code combinations with a token each (token 2 + i); a fitted vocabulary is loaded into it
        size = config.vocab_size or self.combinations
        self.register_buffer("vocabulary", torch.arange(size, dtype=torch.long))
        self.num_tokens = len(SPECIAL_TOKENS) + size
        self.embed_tokens = nn.Embedding(self.num_tokens, config.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.encoder = TransformerEncoder(
            config.hidden_size, config.num_layers, config.num_heads, config.ffn_size, layer_norm_first=False,
            pos_conv_kernel=config.pos_conv_kernel, pos_conv_groups=config.pos_conv_groups,
            dropout=config.dropout, attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout, eps=config.layer_norm_eps,
        )
        self.hidden_sizes = [config.hidden_size] * (config.num_layers + 1)

    @property
    def frame_geometry(self) -> FrameGeometry:
        """The tokenizer's frames (10 ms, 465-sample field; group norm over time: not frame-local)."""
        return self.tokenizer.frame_geometry

    def output_lengths(self, wav_lens: Tensor) -> Tensor:
        """Frames (tokens) produced for each waveform length."""
        return self.tokenizer.output_lengths(wav_lens)

    def train(self, mode: bool = True) -> DiscreteBERT:
        """Train/eval mode for the encoder; the frozen tokenizer always stays in eval mode."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    def set_vocabulary(self, combinations: Tensor) -> None:
        """Give the code combinations `combinations` (strictly increasing, `vocab_size` of them) tokens."""
        combinations = combinations.to(torch.long).flatten()
        if combinations.shape != self.vocabulary.shape:
            raise ConfigError(f"discrete_bert: {len(combinations)} code combinations for a vocabulary of "
                              f"{len(self.vocabulary)}")
        if len(combinations) and (int(combinations[0]) < 0 or int(combinations[-1]) >= self.combinations
                                  or bool((combinations[1:] <= combinations[:-1]).any())):
            raise ConfigError(f"discrete_bert: the vocabulary must be strictly increasing code combinations "
                              f"in 0..{self.combinations - 1}")
        self.vocabulary.copy_(combinations)

    def token_ids(self, combined: Tensor) -> Tensor:
        """Code combinations (any shape) → token ids: 2 + position in `vocabulary`, or <unk>."""
        position = torch.searchsorted(self.vocabulary, combined.contiguous())
        found = self.vocabulary[position.clamp(max=len(self.vocabulary) - 1)] == combined
        return torch.where(found, position + len(SPECIAL_TOKENS), torch.full_like(position, UNK))

    def tokenize(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """((B, T') token ids, (B,) valid frames) of padded 16 kHz waveforms; padded frames are <unk>."""
        codes, lengths = vq_codes(self.tokenizer, wavs, wav_lens)
        ids = self.token_ids(combine_codes(codes, self.config.tokenizer.vq_vars))
        return ids.masked_fill(~padding_mask(lengths, ids.shape[1]), UNK), lengths

    def encode(self, tokens: Tensor, lengths: Tensor,
               attentions: list[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """Token ids (B, T') → (every hidden state, the last layer's output); pre-training masks the ids."""
        x = self.embed_tokens(tokens)
        valid = padding_mask(lengths, x.shape[1]) if bool((lengths < x.shape[1]).any()) else None
        return self.encoder(x, valid, attentions)

    def forward(self, wavs: Tensor, wav_lens: Tensor, output_attentions: bool = False) -> UpstreamOutput:
        """(B, T) float waveforms at 16 kHz, (B,) lengths → the encoder's input and every layer's output (and,
        with `output_attentions`, each layer's (B, H, T', T') attention probabilities)."""
        tokens, lengths = self.tokenize(wavs, wav_lens)
        attentions: list[Tensor] | None = [] if output_attentions else None
        hidden_states, _ = self.encode(tokens, lengths, attentions)
        return UpstreamOutput(hidden_states, lengths, attentions)


# --- registered configurations ---


@register_upstream("discrete_bert")
def discrete_bert(**overrides: Any) -> DiscreteBERT:
    """Discrete BERT: BERT base (12 × 768, 12 heads, FFN 3072) over Gumbel vq-wav2vec tokens."""
    return DiscreteBERT(replace(DiscreteBERTConfig(), **overrides))


@register_upstream("discrete_bert_tiny")
def discrete_bert_tiny(**overrides: Any) -> DiscreteBERT:
    """A small Discrete BERT for tests: 2 layers × 32 over the tiny k-means vq-wav2vec (2 × 16 entries)."""
    tokenizer = Wav2VecConfig(**TINY, activation="gelu", vq_type="kmeans", vq_vars=16)
    config = DiscreteBERTConfig(tokenizer=tokenizer, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
                                pos_conv_kernel=16, pos_conv_groups=4, dropout=0.0, attention_dropout=0.0)
    return DiscreteBERT(replace(config, **overrides))

"""Sequence-to-sequence parts for speech translation: subword targets (sentencepiece), a transformer decoder
head with cross-attention over the features, teacher-forced loss, greedy and beam-search decoding.

The decoder is `torch.nn.TransformerDecoder` (pre-norm layers: causal self-attention, cross-attention, FFN):
`speechrep.nn.transformer` has self-attention blocks only, and PyTorch's layer is the reference
implementation of exactly this block, dispatching to `scaled_dot_product_attention`.

    sp = SubwordModel.train(train_translations, vocab_size=1000)
    head = TransformerDecoderHead(features.hidden_size, len(sp))
    memory, memory_lengths = head(features, lengths)                  # 2x conv subsampling per conv layer
    logits = head.logits(memory, memory_lengths, prev_tokens)        # (B, L, V), teacher forcing
    hyps = beam_search(head, memory, memory_lengths, beam_size=5, max_len=60)  # or greedy_decode(...)
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.nn.frames import padding_mask
from speechrep.storage import atomic_write_bytes

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class SubwordModel:
    """A sentencepiece model (unigram or BPE) held in memory; ids 0-3 are pad, unk, bos and eos."""

    def __init__(self, proto: bytes):
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, model_type: str = "unigram") -> "SubwordModel":
        """Train on `sentences` (deterministic: one thread); `vocab_size` is an upper bound (small corpora
        have fewer pieces)."""
        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise ConfigError(f"subword model_type {model_type!r}: expected unigram or bpe")
        sentences = [s for s in sentences if s.strip()]
        if not sentences:
            raise ConfigError("subword model: no non-empty sentences to train on")
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, hard_vocab_limit=False, num_threads=1, pad_id=PAD_ID, unk_id=UNK_ID,
            bos_id=BOS_ID, eos_id=EOS_ID, minloglevel=2)
        return cls(out.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Subword ids of a sentence (no bos/eos)."""
        return list(self.sp.encode(text))

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of a sentence."""
        return list(self.sp.encode(text, out_type=str))

    def decode(self, ids: Sequence[int]) -> str:
        """The detokenized sentence of subword ids (pad, bos and eos are dropped)."""
        return self.sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def save(self, path: Path) -> Path:
        """Write the model file (loadable by `sentencepiece.SentencePieceProcessor(model_file=...)`)."""
        atomic_write_bytes(Path(path), self.proto)
        return Path(path)


def _sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    steps = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    scale = torch.exp(steps * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)[:, : dim // 2]
    return table


class TransformerDecoderHead(nn.Module):
    """Features → `conv_layers` stride-2 convolutions (2x subsampling each) → d_model with sinusoidal
    positions (the memory); a pre-norm transformer decoder over subword embeddings attends to it. Output
    embedding tied to the input one."""

    def __init__(self, input_size: int, vocab_size: int, d_model: int = 256, num_layers: int = 3,
                 num_heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.1, conv_layers: int = 1):
        super().__init__()
        if d_model % num_heads:
            raise ConfigError(f"st: d_model {d_model} is not a multiple of num_heads {num_heads}")
        self.d_model = d_model
        self.conv_layers = conv_layers
        self.subsampler = nn.ModuleList(
            nn.Conv1d(input_size if i == 0 else d_model, d_model, kernel_size=3, stride=2, padding=1)
            for i in range(conv_layers))
        self.project = nn.Linear(input_size, d_model) if conv_layers == 0 else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ffn_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(d_model))

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The memory (B, T', d_model) the decoder attends to and its valid lengths (B,)."""
        x = features * padding_mask(lengths, features.size(1))[..., None].to(features.dtype)
        if self.conv_layers:
            x = x.transpose(1, 2)
            for conv in self.subsampler:
                x = F.gelu(conv(x))
                lengths = (lengths - 1) // 2 + 1
                x = x * padding_mask(lengths, x.size(2))[:, None, :].to(x.dtype)
            x = x.transpose(1, 2)
        x = self.project(x)
        x = x + _sinusoids(x.size(1), self.d_model, x.device).to(x.dtype)
        return self.dropout(x), lengths

    def logits(self, memory: Tensor, memory_lengths: Tensor, tokens: Tensor) -> Tensor:
        """(B, L, V) next-token logits for every prefix of `tokens` (B, L), which start with bos."""
        length = tokens.size(1)
        x = self.embed(tokens) * math.sqrt(self.d_model)
        x = self.dropout(x + _sinusoids(length, self.d_model, x.device).to(x.dtype))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(diagonal=1)
        x = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True,
                         tgt_key_padding_mask=tokens == PAD_ID,
                         memory_key_padding_mask=~padding_mask(memory_lengths, memory.size(1)))
        return x @ self.embed.weight.T


def _next_log_probs(head: TransformerDecoderHead, memory: Tensor, memory_lengths: Tensor,
                    tokens: Tensor) -> Tensor:
    """(B, V) log-probabilities of the next token; pad and bos are never generated."""
    logits = head.logits(memory, memory_lengths, tokens)[:, -1].float()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def teacher_forcing(targets: Sequence[Sequence[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(decoder input `bos + ids`, expected output `ids + eos`), both (B, L) padded with PAD_ID."""
    length = 1 + max(len(t) for t in targets)
    inputs = torch.full((len(targets), length), PAD_ID, dtype=torch.long)
    outputs = torch.full((len(targets), length), PAD_ID, dtype=torch.long)
    for i, ids in enumerate(targets):
        inputs[i, : len(ids) + 1] = torch.tensor([BOS_ID, *ids])
        outputs[i, : len(ids) + 1] = torch.tensor([*ids, EOS_ID])
    return inputs.to(device), outputs.to(device)


def _until_eos(rows: Tensor) -> list[list[int]]:
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return out


def greedy_decode(head: TransformerDecoderHead, memory: Tensor, memory_lengths: Tensor,
                  max_len: int) -> list[list[int]]:
    """The most likely next token at every step, until eos or `max_len` tokens; ids without bos/eos."""
    tokens = torch.full((memory.size(0), 1), BOS_ID, dtype=torch.long, device=memory.device)
    done = torch.zeros(memory.size(0), dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        logp = _next_log_probs(head, memory, memory_lengths, tokens)
        step = torch.where(done, EOS_ID, logp.argmax(dim=-1))
        tokens = torch.cat([tokens, step[:, None]], dim=1)
        done |= step == EOS_ID
        if bool(done.all()):
            break
    return _until_eos(tokens[:, 1:])


def beam_search(head: TransformerDecoderHead, memory: Tensor, memory_lengths: Tensor, beam_size: int,
                max_len: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search, batched over utterances × beams: the `beam_size` best prefixes by summed log-probability
    are kept (finished ones stay in the beam, extended by eos at no cost); the answer is the best finished
    hypothesis by score / length**length_penalty (length in tokens, eos included). Beam 1 is greedy."""
    if beam_size < 1:
        raise ConfigError(f"beam_size {beam_size}: must be at least 1")
    batch, k = memory.size(0), beam_size
    memory = memory.repeat_interleave(k, dim=0)
    memory_lengths = memory_lengths.repeat_interleave(k)
    tokens = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=memory.device)
    scores = torch.zeros(batch, k, device=memory.device)
    scores[:, 1:] = float("-inf")  # the beams start as one hypothesis
    done = torch.zeros(batch * k, dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        logp = _next_log_probs(head, memory, memory_lengths, tokens)
        vocab = logp.size(-1)
        finished = torch.full_like(logp[0], float("-inf"))
        finished[EOS_ID] = 0.0
        logp = torch.where(done[:, None], finished, logp)
        top, index = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab).topk(k, dim=1)
        rows = (torch.arange(batch, device=memory.device)[:, None] * k + index // vocab).reshape(-1)
        step = (index % vocab).reshape(-1)
        tokens = torch.cat([tokens[rows], step[:, None]], dim=1)
        done = done[rows] | (step == EOS_ID)
        scores = top
        if bool(done.all()):
            break
    generated = tokens[:, 1:]
    has_eos = (generated == EOS_ID).any(dim=1)
    lengths = torch.where(has_eos, (generated == EOS_ID).int().argmax(dim=1) + 1, generated.size(1))
    normalized = scores.reshape(-1) / lengths.float() ** length_penalty
    normalized = torch.where(has_eos, normalized, normalized - 1e9).reshape(batch, k)  # finished ones first
    best = torch.arange(batch, device=memory.device) * k + normalized.argmax(dim=1)
    return _until_eos(generated[best])

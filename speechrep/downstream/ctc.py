"""CTC pieces for PR, ASR and SF: a symbol vocabulary, tokenizers, the CTC loss and greedy decoding.

`Vocabulary` maps symbols to ids with the CTC blank at id 0 and `<unk>` at id 1, then the symbols seen in the
training labels in sorted order, so the same labels always give the same ids. It is saved and loaded as JSON.
Characters use `|` for the word boundary so a character sequence is a list of single-symbol tokens; phones and
words are whitespace-separated tokens. For slot filling, `slot_char_tokens` keeps the slot tags (`B-type`,
`E-type`) whole, as single CTC symbols between word boundaries; `chars_to_text` turns both back into text.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from speechrep.errors import ConfigError, SpeechrepError

BLANK = "<blank>"
UNK = "<unk>"
WORD_BOUNDARY = "|"


def char_tokens(text: str) -> list[str]:
    """Characters of a transcript, runs of whitespace turned into one `|`."""
    return list(WORD_BOUNDARY.join(text.split()))


def slot_char_tokens(text: str) -> list[str]:
    """Characters of a slot-tagged transcript, each `B-...`/`E-...` tag kept as one token (SUPERB SF)."""
    tokens: list[str] = []
    for k, word in enumerate(text.split()):
        if k:
            tokens.append(WORD_BOUNDARY)
        tokens.extend([word] if word.startswith(("B-", "E-")) and len(word) > 2 else word)
    return tokens


def chars_to_text(tokens: Sequence[str]) -> str:
    """Inverse of `char_tokens`: join characters and turn `|` back into spaces."""
    return " ".join("".join(tokens).replace(WORD_BOUNDARY, " ").split())


def phone_tokens(text: str) -> list[str]:
    """Whitespace-separated tokens (phones, words, or slot tags)."""
    return text.split()


class Vocabulary:
    """Symbols ↔ ids for CTC: blank is 0, `<unk>` is 1, then the label symbols."""

    def __init__(self, symbols: Sequence[str]):
        if len(symbols) < 2 or symbols[0] != BLANK or symbols[1] != UNK:
            raise ConfigError(f"vocabulary must start with {BLANK!r}, {UNK!r}; got {list(symbols[:2])}")
        if len(set(symbols)) != len(symbols):
            raise ConfigError("vocabulary has repeated symbols")
        self.symbols = list(symbols)
        self._ids = {symbol: i for i, symbol in enumerate(self.symbols)}

    @classmethod
    def build(cls, labels: Iterable[Sequence[str]]) -> Vocabulary:
        """Vocabulary of every symbol in the tokenised training labels, sorted."""
        seen = {token for tokens in labels for token in tokens}
        seen -= {BLANK, UNK}
        return cls([BLANK, UNK, *sorted(seen)])

    @property
    def blank_id(self) -> int:
        """Id of the CTC blank (always 0)."""
        return 0

    @property
    def unk_id(self) -> int:
        """Id given to symbols not in the vocabulary."""
        return 1

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of tokens; unknown tokens become `<unk>`."""
        return [self._ids.get(token, self.unk_id) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of ids (no CTC collapsing: see `greedy_ctc_decode`)."""
        return [self.symbols[i] for i in ids]

    def save(self, path: str | Path) -> None:
        """Write the symbols as a JSON list."""
        Path(path).write_text(json.dumps(self.symbols, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by `save`."""
        path = Path(path)
        try:
            symbols = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read vocabulary: {error}") from None
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ConfigError(f"{path}: a vocabulary must be a JSON list of strings")
        try:
            return cls(symbols)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def ctc_loss(logits: Tensor, lengths: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
    """Mean CTC loss (per target symbol, PyTorch's "mean") of (B, T, V) logits against id sequences."""
    if len(targets) != logits.shape[0]:
        raise SpeechrepError(f"CTC: {logits.shape[0]} utterances but {len(targets)} targets")
    device = logits.device
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long, device=device)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long, device=device)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V), as F.ctc_loss wants
    return F.ctc_loss(log_probs, flat, lengths.long().to(device), target_lengths, blank=0, zero_infinity=True)


def greedy_ctc_decode(logits: Tensor, lengths: Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best-path decoding of (B, T, V) logits: argmax per frame, collapse repeats, drop blanks and padding."""
    best = logits.argmax(dim=-1)  # (B, T)
    previous = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
    valid = torch.arange(best.shape[1], device=best.device)[None, :] < lengths.to(best.device)[:, None]
    keep = (best != previous) & (best != blank_id) & valid
    counts = keep.sum(dim=1).tolist()
    return [ids.tolist() for ids in best[keep].split(counts)]

"""Edit-distance error rates (PER, WER, CER) over token sequences, computed by jiwer.

`error_rate` is the corpus-level rate: total substitutions + deletions + insertions over the total number of
reference tokens, the way SUPERB and Kaldi report PER and WER (not a mean of per-utterance rates).
"""
from __future__ import annotations

from collections.abc import Sequence

import jiwer

from speechrep.errors import SpeechrepError


def _check_pairs(hypotheses: Sequence, references: Sequence) -> None:
    if len(hypotheses) != len(references):
        raise SpeechrepError(
            f"error rate: {len(hypotheses)} hypotheses but {len(references)} references; they must pair up"
        )


def error_rate(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus edit-distance rate between token lists (phones for PER, words for WER, characters for CER)."""
    _check_pairs(hypotheses, references)
    num_ref_tokens = sum(len(ref) for ref in references)
    if num_ref_tokens == 0:
        raise SpeechrepError("error rate: every reference is empty, the rate is undefined")
    errors = 0
    scored_hyps, scored_refs = [], []
    for hyp, ref in zip(hypotheses, references):
        for token in (*hyp, *ref):
            if not token or any(ch.isspace() for ch in token):
                raise SpeechrepError(f"error rate: token {token!r} is empty or contains whitespace")
        if len(ref) == 0:
            errors += len(hyp)  # jiwer refuses empty references; every hypothesis token is an insertion
        else:
            scored_hyps.append(" ".join(hyp))
            scored_refs.append(" ".join(ref))
    if scored_refs:
        out = jiwer.process_words(scored_refs, scored_hyps)
        errors += out.substitutions + out.deletions + out.insertions
    return errors / num_ref_tokens


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER between whitespace-separated transcripts."""
    _check_pairs(hypotheses, references)
    return error_rate([h.split() for h in hypotheses], [r.split() for r in references])


def char_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus CER between transcripts; spaces count as characters (runs of spaces collapse to one)."""
    _check_pairs(hypotheses, references)

    def chars(text: str) -> list[str]:
        return ["|" if ch == " " else ch for ch in " ".join(text.split())]

    return error_rate([chars(h) for h in hypotheses], [chars(r) for r in references])

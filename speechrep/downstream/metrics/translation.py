"""BLEU for speech translation, by sacrebleu (Post 2018): corpus BLEU on detokenized text, with the signature
that says how it was computed (tokenizer, case, smoothing, sacrebleu version)."""
from __future__ import annotations

from collections.abc import Sequence

from speechrep.errors import SpeechrepError


def _bleu():  # noqa: ANN202 - sacrebleu.metrics.BLEU
    from sacrebleu.metrics import BLEU

    return BLEU()  # sacrebleu's defaults: 13a tokenizer, mixed case, exponential smoothing


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of one hypothesis per reference, detokenized text, sacrebleu's default settings."""
    if len(hypotheses) != len(references):
        raise SpeechrepError(f"BLEU: {len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise SpeechrepError("BLEU: no sentences to score")
    return float(_bleu().corpus_score(list(hypotheses), [list(references)]).score)


def bleu_signature() -> str:
    """sacrebleu's signature of `corpus_bleu` (how the number was computed, reported beside it), e.g.
    `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`."""
    bleu = _bleu()
    bleu.corpus_score(["a"], [["a"]])  # the signature names the number of references once it has seen them
    return str(bleu.get_signature())

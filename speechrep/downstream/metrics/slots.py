"""Slot-filling metrics as SUPERB defines them: slot-type F1 and slot-value CER.

A transcript marks each slot inline with tags around its value, e.g.
`"book a table for B-party_size two people E-party_size tonight"`: the slot type is `party_size` and its value
`"two people"`. Only well-formed spans (an opening and a closing tag of the same type) count.

- slot-type F1: per utterance, precision and recall of the *set* of slot types, F1 from those (1.0 when both
  reference and hypothesis have no slot, 0.0 when only one does), averaged over utterances.
- slot-value CER: every reference slot value is paired with the hypothesis value of the same type that has the
  lowest CER (an empty string when the hypothesis lacks that type); CER is then computed over all pairs.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from speechrep.downstream.metrics.text import char_error_rate
from speechrep.errors import SpeechrepError

_SLOT_SPAN = re.compile(r"(?:^| )B-(\S+) (.+?) E-\1(?= |$)")


def parse_slots(text: str) -> dict[str, list[str]]:
    """{slot type: [values]} from a tagged transcript (values in order of appearance)."""
    slots: dict[str, list[str]] = {}
    for slot_type, value in _SLOT_SPAN.findall(" ".join(text.split())):
        slots.setdefault(slot_type, []).append(value)
    return slots


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references) or not references:
        raise SpeechrepError(f"slot metrics: {len(hypotheses)} hypotheses vs {len(references)} references")


def slot_type_f1(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean per-utterance F1 between the sets of slot types in hypothesis and reference."""
    _check_pairs(hypotheses, references)
    total = 0.0
    for hyp, ref in zip(hypotheses, references):
        hyp_types, ref_types = set(parse_slots(hyp)), set(parse_slots(ref))
        if not hyp_types and not ref_types:
            total += 1.0
            continue
        if not hyp_types or not ref_types:
            continue
        common = len(hyp_types & ref_types)
        precision, recall = common / len(hyp_types), common / len(ref_types)
        if common:
            total += 2 * precision * recall / (precision + recall)
    return total / len(references)


def slot_value_cer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """CER over reference slot values, each paired with the closest hypothesis value of its type."""
    _check_pairs(hypotheses, references)
    paired_hyps, paired_refs = [], []
    for hyp, ref in zip(hypotheses, references):
        hyp_slots = parse_slots(hyp)
        for slot_type, values in parse_slots(ref).items():
            for value in values:
                candidates = hyp_slots.get(slot_type, [""])
                best = min(candidates, key=lambda c: char_error_rate([c], [value]))
                paired_hyps.append(best)
                paired_refs.append(value)
    if not paired_refs:
        raise SpeechrepError("slot_value_cer: the references contain no slot")
    return char_error_rate(paired_hyps, paired_refs)

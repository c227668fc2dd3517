"""Sentence type from intonation (issue 17; Lin et al., SLT 2022): statement, question or exclamation.

Labels: `custom["sentence_type"]` of the synthetic `sentence_type` subset, where every sentence is spoken in
all three types with the same words (`speechrep.data.synth.prosodic`), so the words alone are at chance.
Mean-pool + linear on the learned weighted sum of layers, cross-entropy, accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

from speechrep.downstream.tasks.prosodic import ProsodicClassConfig, prosodic_task


@dataclass
class SentenceTypeConfig(ProsodicClassConfig):
    """sentence_type: the shared prosodic recipe on the `sentence_type` subset."""

    subset: str = "sentence_type"


TASK = prosodic_task("sentence_type", SentenceTypeConfig)

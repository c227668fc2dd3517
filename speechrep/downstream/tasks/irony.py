"""Irony (issue 17; Lin et al., SLT 2022): a compliment said sincerely or with exaggerated irony.

Labels: `custom["irony"]` (sincere, ironic) of the synthetic `irony` subset, where every sentence is spoken
both ways with the same words (`speechrep.data.synth.prosodic`), so the words alone are at chance.
Mean-pool + linear on the learned weighted sum of layers, cross-entropy, accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

from speechrep.downstream.tasks.prosodic import ProsodicClassConfig, prosodic_task


@dataclass
class IronyConfig(ProsodicClassConfig):
    """irony: the shared prosodic recipe on the `irony` subset."""

    subset: str = "irony"


TASK = prosodic_task("irony", IronyConfig)

"""Emphasis position (issue 17; Lin et al., SLT 2022): which of the first three words is emphasised.

Labels: `custom["emphasis"]` (1, 2 or 3) of the synthetic `emphasis` subset, where every sentence is spoken
with each of the three emphases and the same words (`speechrep.data.synth.prosodic`), so the words alone are
at chance.
Mean-pool + linear on the learned weighted sum of layers, cross-entropy, accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

from speechrep.downstream.tasks.prosodic import ProsodicClassConfig, prosodic_task


@dataclass
class EmphasisConfig(ProsodicClassConfig):
    """emphasis: the shared prosodic recipe on the `emphasis` subset."""

    subset: str = "emphasis"


TASK = prosodic_task("emphasis", EmphasisConfig)

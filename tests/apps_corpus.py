"""A tiny parallel corpus of the synthetic eSpeak NG speakers for the apps tests (built in under a second)."""
from __future__ import annotations

from pathlib import Path

from speechrep.apps.parallel import make_parallel_corpus


def parallel_corpus(root: Path) -> Path:
    """Four speakers, six own and four shared sentences each: OUT/vc/{train,dev,test}, OUT/vc_pool/train."""
    make_parallel_corpus(root, num_speakers=4, own_sentences=6, shared_sentences=4, seed=0)
    return root

"""The generative family's `tiny` presets on the tiny synthetic corpus: loss falls, export loads (slow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechrep.data.synth import make_synthetic_corpus
from speechrep.pretrain import run_method
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "synth_tiny_unlabeled"
    make_synthetic_corpus(root, preset="tiny", seed=0, subsets=["unlabeled"])
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("method", "num_hidden", "stride"), [
    ("vq_apc", 3, 160),        # 2 GRU layers + the quantized one
    ("npc", 5, 160),           # 3 conv blocks + masked sum + quantized
    ("mockingjay", 3, 480),    # embedding + 2 layers, frames stacked ×3
    ("tera", 3, 160),
    ("audio_albert", 4, 160),  # embedding + 3 applications of one layer
])
def test_tiny_preset_trains_and_exports(tiny_corpus: Path, tmp_path: Path, method: str, num_hidden: int,
                                        stride: int) -> None:
    out = run_method(method, tiny_corpus, tmp_path / "run", "tiny")
    # the train loss (one batch, fresh masks every step) is noisy; the dev loss (fixed masks) is not
    dev = [m["loss"] for m in read_metrics(tmp_path / "run", "eval")]  # 4-6 evaluations
    assert len(dev) >= 4 and dev[-1] < dev[0]
    losses = [m["loss"] for m in read_metrics(tmp_path / "run", "train")]
    assert len(losses) >= 10 and np.isfinite(losses).all()
    upstream = load_upstream(out)
    assert upstream.stride == stride and len(upstream.hidden_sizes) == num_hidden

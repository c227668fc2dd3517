"""Slow: every task of this runner on the real tiny mini-SUPERB (eSpeak NG corpus), from the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from speechrep.cli import main

TASKS = ("ks", "sid", "er", "ic", "pr", "pf", "asr")
METRIC_RANGE = {"accuracy": (0.0, 1.0), "per": (0.0, math.inf), "wer": (0.0, math.inf)}


@pytest.mark.slow
def test_benchmark_on_tiny_mini_superb(tmp_path: Path) -> None:
    from speechrep.data.synth import make_synthetic_corpus

    corpus = tmp_path / "corpus"
    make_synthetic_corpus(corpus, preset="tiny", seed=0, subsets=["ks", "sid", "er", "ic", "pr", "asr"])
    out = tmp_path / "out"
    argv = ["benchmark", "--upstream", "fbank", "--upstream", "fbank_global", "--upstream", "hubert_tiny",
            "--tasks", ",".join(TASKS), "--corpus", str(corpus), "--out", str(out), "--preset", "tiny"]
    assert main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    rows = {(r["upstream"], r["task"]): r for r in summary["rows"]}
    assert len(rows) == 3 * len(TASKS)
    for (upstream, task), row in rows.items():
        low, high = METRIC_RANGE[row["metric"]]
        for split in ("dev", "test"):
            assert low <= row[split][row["metric"]] <= high, (upstream, task, split)
    assert summary["scores"]["fbank"] == pytest.approx(0.0)
    assert set(summary["scores"]) == {"fbank", "fbank_global", "hubert_tiny"}

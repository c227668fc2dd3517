"""Slow: `speechrep benchmark` under torchrun (2 CPU processes, gloo), feature cache and LR sweep."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from downstream_corpus import make_corpus


@pytest.mark.slow
def test_benchmark_under_torchrun(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", ("ks", "er"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "speechrep.cli",
           "benchmark", "--upstream", "fbank", "--upstream", "fbank_global", "--tasks", "ks,er",
           "--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--lr-sweep", "1e-2,1e-3",
           "train.max_steps=20", "train.eval_every=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| fbank_global |") == 1  # only rank 0 prints the leaderboard
    rows = {(r["upstream"], r["task"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert len(rows) == 4
    assert rows[("fbank_global", "ks")]["test"]["accuracy"] >= 0.9
    assert set(rows[("fbank", "er")]["dev_by_lr"]) == {"0.01", "0.001"}

"""Two gloo processes under torchrun (killed once and resumed) train to the same weights as one process with
the same global batch."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechrep.train import read_metrics

TOY = Path(__file__).with_name("ddp_toy.py")


def load_toy():
    spec = importlib.util.spec_from_file_location("ddp_toy", TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_gloo_processes_match_one_process(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "ddp.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(TOY), str(tmp_path / "ddp"), str(out), "4"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr and "from step 3" in proc.stderr

    single = load_toy().run(tmp_path / "single")
    ddp_state = torch.load(out, weights_only=True)
    initial = load_toy().toy_model().state_dict()
    assert (ddp_state["0.weight"] - initial["0.weight"]).abs().max() > 1e-3  # training moved the weights
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6)
    # The logged train loss is the mean over ranks, i.e. the loss of the whole global batch.
    assert [r["loss"] for r in read_metrics(tmp_path / "ddp", "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "single", "train")], rel=1e-5)
    assert [r["step"] for r in read_metrics(tmp_path / "ddp", "eval")] == [3, 6]
    assert (tmp_path / "ddp" / "checkpoints" / "best.pt").is_file()

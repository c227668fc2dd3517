"""Pre-training runs survive a kill (the resumed run ends with the uninterrupted run's weights, Gumbel
temperature included) and run as two gloo processes under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_corpus import unlabeled_corpus

from speechrep.pretrain import run_method
from speechrep.train import read_checkpoint, read_metrics
from speechrep.upstream import load_upstream

# a 2-layer width-32 wav2vec 2.0 on short windows: a few steps take seconds
TINY = [
    "model.hidden_size=32",
    "model.num_heads=2",
    "model.ffn_size=64",
    "num_negatives=10",
    "gumbel_decay=0.9",
    "data.max_duration=6.0",
    "data.max_utterance=3.0",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


class _Killed(Exception):
    """Stands in for a killed job."""


def test_killed_wav2vec2_run_resumes_to_the_same_weights(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    args = TINY + ["train.max_steps=9", "train.eval_every=4"]
    full = run_method("wav2vec2", corpus, tmp_path / "full", "tiny", args)

    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_after_step_6(*a, **kw):
        inner = kw["after_step"]

        def after_step(model, step):
            inner(model, step)
            if step == 6:  # last checkpoint: step 4
                raise _Killed

        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_after_step_6)
    with pytest.raises(_Killed):
        run_method("wav2vec2", corpus, tmp_path / "split", "tiny", args)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("wav2vec2", corpus, tmp_path / "split", "tiny", args)

    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    heads = [
        read_checkpoint(run / "checkpoints" / "last.pt")["model"]
        for run in (tmp_path / "full", tmp_path / "split")
    ]
    assert int(heads[1]["updates"]) == 9
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0] if not k.startswith("upstream."))
    full_logs = read_metrics(tmp_path / "full", "train")
    split_logs = [m for m in read_metrics(tmp_path / "split", "train") if m["step"] > 4]
    assert [m["loss"] for m in full_logs[4:]] == [m["loss"] for m in split_logs[-5:]]
    assert [m["temperature"] for m in full_logs[4:]] == [m["temperature"] for m in split_logs[-5:]]


def test_two_gloo_processes_pretrain_under_torchrun(corpus: Path, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "speechrep.cli",
            "pretrain",
            "--method",
            "wav2vec2",
            "--data",
            str(corpus),
            "--out",
            str(run_dir),
            "--preset",
            "tiny",
            *TINY,
            "train.max_steps=4",
            "train.eval_every=2",
            "data.max_duration=3.0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4 and int(ckpt["model"]["updates"]) == 4
    logs = read_metrics(run_dir, "train")
    assert [m["step"] for m in logs] == [1, 2, 3, 4] and all(0 < m["contrastive"] < 5 for m in logs)
    upstream = load_upstream(run_dir / "upstream")
    assert upstream.stride == 320 and len(upstream.hidden_sizes) == 3

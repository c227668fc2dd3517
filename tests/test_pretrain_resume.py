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


APC = ["model.hidden_size=16", "train.max_steps=2", "train.eval_every=2", "data.max_duration=6.0"]


def test_pretrain_out_is_held_by_one_run_and_remembers_its_settings(corpus: Path, tmp_path: Path, capsys) -> None:
    from speechrep.cli import main
    from speechrep.storage import OutputLock

    run = tmp_path / "run"
    argv = ["pretrain", "--method", "apc", "--data", str(corpus), "--out", str(run), "--preset", "tiny"]
    with OutputLock(run, "another speechrep pretrain"):  # what a concurrent run holds
        assert main([*argv, *APC]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in use by another speechrep pretrain" in err
    assert not (run / "checkpoints").exists()

    assert main([*argv, *APC]) == 0
    first = read_checkpoint(run / "checkpoints" / "last.pt")
    assert main([*argv, *APC]) == 0  # the same command: resumes (finished: returns at once)
    capsys.readouterr()
    changed = [*APC[:-1], "data.max_duration=5.0"]
    assert main([*argv, *changed]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "overrides" in err and "--overwrite" in err
    kept = read_checkpoint(run / "checkpoints" / "last.pt")
    assert all(torch.equal(kept["model"][k], first["model"][k]) for k in first["model"])  # nothing was touched
    assert main([*argv, "--overwrite", *changed]) == 0
    settings = (run / ".speechrep.settings.json").read_text()
    assert "data.max_duration=5.0" in settings and read_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    capsys.readouterr()
    assert main(["pretrain", "--method", "apc", "--data", str(corpus), "--out", str(not_a_folder),
                 "--preset", "tiny", *APC]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder" in err and "Traceback" not in err


def test_pretrain_killed_by_sigkill_twice_resumes_to_the_uninterrupted_losses(corpus: Path, tmp_path: Path) -> None:
    import signal
    import time

    torch.set_num_threads(1)
    args = TINY + ["train.max_steps=10", "train.eval_every=3"]
    full = run_method("wav2vec2", corpus, tmp_path / "full", "tiny", args)
    split = tmp_path / "split"
    command = [sys.executable, "-m", "speechrep.cli", "pretrain", "--method", "wav2vec2", "--data", str(corpus),
               "--out", str(split), "--preset", "tiny", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def trained_steps() -> int:
        rows = read_metrics(split, "train") if (split / "metrics.jsonl").is_file() else []
        return max((r["step"] for r in rows), default=0)

    # killed once right after its first checkpoint (step 3), then again after step 7 (last checkpoint: 6)
    for ready in (lambda: (split / "checkpoints" / "last.pt").is_file(), lambda: trained_steps() >= 7):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert read_checkpoint(split / "checkpoints" / "last.pt")["step"] < 10
    resumed = run_method("wav2vec2", corpus, split, "tiny", args)

    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in read_metrics(tmp_path / "full", "train")] == \
           [m["loss"] for m in read_metrics(split, "train")]
    last, best = (read_checkpoint(split / "checkpoints" / n) for n in ("last.pt", "best.pt"))
    assert best["step"] == last["best_step"]
    assert not [p for p in split.rglob(".tmp-*")]


def test_an_edited_config_file_is_a_changed_setting(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import speechrep.pretrain as pretrain
    from speechrep.cli import main

    argv = ["pretrain", "--method", "apc", "--data", str(corpus), "--out", str(tmp_path / "run"), "--preset",
            "tiny", *APC]
    assert main(argv) == 0
    edited = tmp_path / "configs"
    (edited / "tiny").mkdir(parents=True)
    for name in ("apc.yaml", "tiny/apc.yaml"):
        text = (pretrain.CONFIG_DIR / name).read_text()
        (edited / name).write_text(text.replace("model: {n_future: 3}", "model: {n_future: 5}"))
    assert "n_future: 5" in (edited / "apc.yaml").read_text()
    monkeypatch.setattr(pretrain, "CONFIG_DIR", edited)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.model.n_future: 3 -> 5" in err

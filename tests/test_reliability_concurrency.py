"""Two runs on one output folder: the second fails at once with one line naming the first (its PID), the
first is not disturbed, and a kill -9 of the holder leaves no stale lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechrep.storage import LOCK_NAME, OutputLock

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _speechrep(*args: str) -> list[str]:
    return [sys.executable, "-m", "speechrep.cli", *args]


def _second_run_is_refused(first: list[str], second: list[str], out: Path, ready) -> None:
    holder = subprocess.Popen(first, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert holder.poll() is None, f"the first run ended early: {holder.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the first run never took its folder"
            time.sleep(0.05)
        proc = subprocess.run(second, env=ENV, capture_output=True, text=True, timeout=120)
        assert holder.poll() is None, "the first run must still be running"
        assert proc.returncode == 1, proc.stderr[-2000:]
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in proc.stderr
        assert f"in use by speechrep {first[3]} (pid {holder.pid} on" in err[0], err[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with OutputLock(out, "test"):  # the kernel dropped the killed holder's lock
        pass


def test_two_synth_runs_on_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    first = _speechrep("synth", "--out", str(out), "--preset", "small", "--subsets", "unlabeled", "--workers", "1")
    second = _speechrep("synth", "--out", str(out), "--preset", "small", "--subsets", "ks", "--workers", "1")
    _second_run_is_refused(first, second, out, lambda: any((out / "unlabeled" / "audio").glob("*.flac"))
                           if (out / "unlabeled" / "audio").is_dir() else False)
    assert not (out / "ks").exists() and not (out / "unlabeled" / ".complete").exists()


def test_two_pretrain_runs_on_one_folder(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from pretrain_corpus import unlabeled_corpus

    corpus = unlabeled_corpus(tmp_path_factory)
    out = tmp_path / "run"
    command = _speechrep("pretrain", "--method", "apc", "--data", str(corpus), "--out", str(out), "--preset",
                         "tiny", "model.hidden_size=16", "train.max_steps=100000", "train.eval_every=1")
    _second_run_is_refused(command, command, out,
                           lambda: (out / "checkpoints" / "last.pt").is_file() and (out / LOCK_NAME).is_file())

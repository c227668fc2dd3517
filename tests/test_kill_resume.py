"""kill -9 in the middle of `speechrep benchmark` and `speechrep synth`: the same command run again finishes
with exactly what an uninterrupted run writes, and leaves no temporary file behind."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TIMEOUT = 240


def _speechrep(*args: str) -> list[str]:
    return [sys.executable, "-m", "speechrep", *args]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_when(args: list[str], ready, poll: float = 0.05) -> None:
    """Start `args`, SIGKILL it as soon as `ready()` holds (it must not have finished by then)."""
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ready():
            assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]


def test_benchmark_killed_while_training_resumes_to_the_uninterrupted_result(corpus: Path, tmp_path: Path) -> None:
    steps = ["ks.train.max_steps=240", "ks.train.eval_every=40", "ks.train.log_every=10"]

    def bench(out: Path) -> list[str]:
        return _speechrep("benchmark", "--upstream", "fbank", "--tasks", "ks", "--corpus", str(corpus),
                          "--out", str(out), "--preset", "tiny", *steps)

    _run(bench(tmp_path / "full"))
    split = tmp_path / "split"
    last = split / "fbank" / "ks" / "checkpoints" / "last.pt"
    _kill_when(bench(split), last.is_file)  # killed after its first checkpoint, long before the end
    assert not (split / "fbank" / "ks" / "results.json").exists()
    _run(bench(split))

    full, resumed = (json.loads((d / "fbank" / "ks" / "results.json").read_text())
                     for d in (tmp_path / "full", split))
    for key in ("dev", "test", "sub_runs", "layer_weights"):
        assert resumed[key] == full[key], key
    assert not _temporaries(split)


def _tree_digest(folder: Path) -> dict[str, str]:
    """sha1 of every manifest (with the folder's own path taken out) and audio file, by relative path."""
    def content(p: Path) -> bytes:
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        return data.replace(str(folder).encode(), b"CORPUS")

    return {str(p.relative_to(folder)): hashlib.sha1(content(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".gz", ".flac", ".txt", ".json")
            and not p.name.startswith(".")}


def test_synth_killed_mid_subset_resumes_to_the_same_corpus(tmp_path: Path) -> None:
    def synth(out: Path) -> list[str]:  # the micro preset is for tests: the API, in its own process
        code = ("from speechrep.data.synth import make_synthetic_corpus; "
                f"make_synthetic_corpus({str(out)!r}, preset='micro', seed=0, subsets=['ks', 'sid'], num_workers=1)")
        return [sys.executable, "-c", code]

    _run(synth(tmp_path / "full"))
    split = tmp_path / "split"
    first_audio = lambda: any((split / "ks" / "audio").glob("*.flac")) if (split / "ks" / "audio").is_dir() \
        else False  # noqa: E731
    _kill_when(synth(split), first_audio, poll=0.01)
    assert not (split / "ks" / ".complete").exists()
    _run(synth(split))
    assert _tree_digest(split) == _tree_digest(tmp_path / "full")
    assert not _temporaries(split)

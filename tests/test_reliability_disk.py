"""A full disk (a small tmpfs): `speechrep synth` and `speechrep pretrain` stop with one line, mark nothing
complete, and the same command finishes the work once there is space. Skipped where tmpfs cannot be mounted
(not root, no mount namespace)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lhotse import CutSet

from speechrep.cli import main


@pytest.fixture
def small_disk(tmp_path: Path):
    """A mounted tmpfs and a function that resizes it; unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()

    def mount(size: str, remount: bool = False) -> None:
        options = f"remount,size={size}" if remount else f"size={size}"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")

    try:
        yield disk, mount
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_synth_on_a_full_disk_marks_nothing_done_and_finishes_after_space_is_freed(small_disk, tmp_path, capsys):
    disk, mount = small_disk
    reference = tmp_path / "reference"
    assert main(["synth", "--out", str(reference), "--subsets", "ks,unlabeled", "--workers", "1"]) == 0
    mount("2m")  # ks (1.2 MB) fits, unlabeled (2.6 MB) does not
    out = disk / "corpus"
    capsys.readouterr()
    assert main(["synth", "--out", str(out), "--subsets", "ks,unlabeled", "--workers", "1"]) == 1
    err = _one_line_error(capsys)
    assert err.startswith("speechrep synth: error: ") and "disk full" in err
    assert (out / "ks" / ".complete").is_file() and not (out / "unlabeled" / ".complete").exists()

    mount("64m", remount=True)
    assert main(["synth", "--out", str(out), "--subsets", "ks,unlabeled", "--workers", "1"]) == 0
    for split, count in (("train", 24), ("dev", 6), ("test", 6)):
        assert len(CutSet.from_file(out / "unlabeled" / f"{split}.jsonl.gz")) == count
    for subset in ("ks", "unlabeled"):
        ours = {p.name: p.read_bytes() for p in (out / subset / "audio").iterdir()}
        theirs = {p.name: p.read_bytes() for p in (reference / subset / "audio").iterdir()}
        assert ours == theirs, subset
    assert not [p for p in out.rglob(".tmp-*")]


def test_pretrain_on_a_full_disk_stops_with_one_line_and_resumes(small_disk, tmp_path, capsys):
    disk, mount = small_disk
    corpus = tmp_path / "corpus"
    assert main(["synth", "--out", str(corpus), "--subsets", "unlabeled", "--workers", "1"]) == 0
    mount("48k")
    argv = ["pretrain", "--method", "apc", "--data", str(corpus), "--out", str(disk / "run"), "--preset", "tiny",
            "model.hidden_size=16", "train.max_steps=2", "train.eval_every=1", "data.max_duration=6.0"]
    capsys.readouterr()
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert "disk full" in err and str(disk / "run") in err
    assert not (disk / "run" / "results.json").exists()
    mount("64m", remount=True)
    assert main(argv) == 0
    assert (disk / "run" / "upstream" / "model.safetensors").is_file()
    assert not [p for p in (disk / "run").rglob(".tmp-*")]

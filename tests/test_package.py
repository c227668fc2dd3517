"""speechrep as a user installs it: the wheel ships the configs, and runs from another folder with no source tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from downstream_corpus import make_corpus

ROOT = Path(__file__).resolve().parents[1]
FEW_STEPS = ["train.max_steps=3", "train.eval_every=3", "train.log_every=1"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the built wheel is installed into (what a user's site-packages would hold)."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(where / "dist")], check=True, capture_output=True, cwd=where)
    wheel = next((where / "dist").glob("speechrep-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(where / "site"),
                    str(wheel)], check=True, capture_output=True, cwd=where)
    return where / "site"


def _speechrep(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site),
                                                                         "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "speechrep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_ships_every_config_file(installed: Path) -> None:
    shipped = {p.relative_to(installed / "speechrep" / "configs")
               for p in (installed / "speechrep" / "configs").rglob("*.yaml")}
    source = {p.relative_to(ROOT / "speechrep" / "configs") for p in (ROOT / "speechrep" / "configs").rglob("*.yaml")}
    assert shipped == source and Path("downstream/tiny/ks.yaml") in shipped and Path("demo.yaml") in shipped
    wheel = next(installed.parent.glob("dist/*.whl"))
    assert "speechrep/configs/pretrain/tiny/apc.yaml" in zipfile.ZipFile(wheel).namelist()


def test_installed_wheel_benchmarks_and_pretrains_from_another_folder(installed: Path, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", ("ks",))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import speechrep; print(speechrep.__file__)"], cwd=elsewhere,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert Path(probe.stdout.strip()).is_relative_to(installed), probe.stdout + probe.stderr

    bench = _speechrep(installed, elsewhere, "benchmark", "--upstream", "fbank", "--tasks", "ks", "--corpus",
                       str(corpus), "--out", str(tmp_path / "bench"), "--preset", "tiny", *FEW_STEPS)
    assert bench.returncode == 0, bench.stderr[-2000:]
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert [(r["upstream"], r["task"]) for r in rows] == [("fbank", "ks")]
    assert 0.0 <= rows[0]["test"]["accuracy"] <= 1.0

    pretrain = _speechrep(installed, elsewhere, "pretrain", "--method", "apc", "--data",
                          str(corpus / "ks" / "train.jsonl.gz"), "--out", str(tmp_path / "apc"), "--preset", "tiny",
                          *FEW_STEPS, "data.min_utterance=0.2")
    assert pretrain.returncode == 0, pretrain.stderr[-2000:]
    assert (tmp_path / "apc" / "upstream" / "model.safetensors").is_file()
    assert not any(elsewhere.iterdir())  # nothing written relative to the working folder

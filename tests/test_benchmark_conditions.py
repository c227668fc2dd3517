"""`speechrep benchmark --test-conditions`: each trained head tested once per distortion; clean = today."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import speechrep.downstream.runner as runner
from speechrep.cli import main

FAST = ["train.max_steps=20", "train.eval_every=10"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--upstream", "fbank_global", "--tasks", "ks", "--corpus", str(corpus),
            "--out", str(out), "--preset", "tiny", *extra, *FAST]


def test_conditions_add_rows_without_changing_the_clean_run(corpus: Path, tmp_path: Path, capsys) -> None:
    plain, tested = tmp_path / "plain", tmp_path / "tested"
    assert main(_argv(corpus, plain)) == 0
    assert main(_argv(corpus, tested, "--test-conditions", "clean,noise:snr=0,kind=white")) == 0
    table = capsys.readouterr().out
    before = json.loads((plain / "results.json").read_text())["rows"][0]
    after = json.loads((tested / "results.json").read_text())["rows"][0]
    assert "test_by_condition" not in before
    assert after["test"] == before["test"] and after["dev"] == before["dev"]  # no retraining, same selection
    by_condition = after["test_by_condition"]
    assert list(by_condition) == ["clean", "noise:snr=0,kind=white"]
    assert by_condition["clean"] == before["test"]
    assert by_condition["noise:snr=0,kind=white"]["accuracy"] != before["test"]["accuracy"]
    # the default run's files do not mention conditions; the tested run's leaderboard has their table
    assert "\ntest_conditions:" not in (plain / "config.yaml").read_text()
    assert "\ntest_conditions:\n- clean\n" in (tested / "config.yaml").read_text()
    assert "condition" not in (plain / "leaderboard.md").read_text()
    assert "| fbank_global | ks | accuracy ↑ |" in (tested / "leaderboard.md").read_text()
    assert "noise:snr=0,kind=white" in table
    # distorted audio never reaches the clean feature cache: both caches hold the same cuts
    def cached(out: Path) -> int:
        (folder,) = (out / "features").iterdir()
        return len(runner.FeatureCache(folder).index())

    assert cached(tested) == cached(plain)


def test_noisy_evaluation_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    argv = _argv(corpus, out, "--test-conditions", "noise:snr=0,reverb:rt60=0.8")
    assert main(argv) == 0
    first = json.loads((out / "fbank_global" / "ks" / "results.json").read_text())["test_by_condition"]
    # the pair evaluated again from its finished checkpoint: same distortions, same numbers
    (out / "fbank_global" / "ks" / "results.json").unlink()
    assert main(argv) == 0
    second = json.loads((out / "fbank_global" / "ks" / "results.json").read_text())["test_by_condition"]
    assert first == second and set(first) == {"noise:snr=0", "reverb:rt60=0.8"}


def test_bad_conditions_fail_before_training(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(_argv(corpus, tmp_path / "o", "--test-conditions", "clean,loud:snr=3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown kind 'loud'" in err[-1] and not (tmp_path / "o").exists()
    assert main(_argv(corpus, tmp_path / "o", "--test-conditions", "noise:snr=5,color=pink")) == 2
    assert "unknown parameter 'color' for noise" in capsys.readouterr().err

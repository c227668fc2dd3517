"""`speechrep analyze invariance`: per-layer NMI of k-means clusters with the distortion condition and the
phone, on the tiny tone corpus (its pr subset carries phone alignments)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from downstream_corpus import make_corpus

from speechrep.analysis.invariance import layer_invariance, nmi, run_invariance
from speechrep.audio.conditions import parse_conditions
from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureSource
from speechrep.errors import ConfigError
from speechrep.upstream import load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), ("pr", "ks"))


def _fbank(corpus: Path, conditions: str, **kwargs) -> dict:
    source = FeatureSource("fbank_raw", load_upstream("fbank_raw"))
    return layer_invariance(source, load_cuts(corpus, "pr", "dev"), parse_conditions(conditions), **kwargs)


def test_nmi_extremes() -> None:
    labels = np.array(["a", "b", "c"] * 60)
    assert nmi(np.array([0, 1, 2] * 60), labels) == pytest.approx(1.0)
    assert nmi(np.array([5, 7, 9] * 60), labels) == pytest.approx(1.0)  # names do not matter
    assert nmi(np.repeat([0, 1, 2], 60), labels) == pytest.approx(0.0, abs=1e-9)  # independent by design


def test_loud_noise_makes_clusters_follow_the_condition(corpus: Path) -> None:
    result = _fbank(corpus, "clean,noise:snr=-5,kind=white", k=8, max_frames=400)
    table = result["nmi"]
    assert result["positions"] == 400 and result["frames"] == 800 and result["cuts"] == 16
    assert len(table["condition"]) == 1  # fbank_raw has one hidden state
    # white noise at -5 dB floods the log-mel frames: the clusters split clean from noisy frames
    assert table["condition"][0] > 0.5 > table["chance:condition"][0] + 0.4
    assert table["phone"][0] > table["chance:phone"][0]
    assert result["missing"] == {}


def test_a_condition_that_changes_nothing_is_at_chance(corpus: Path) -> None:
    table = _fbank(corpus, "clean,noise:snr=90", k=8, max_frames=400)["nmi"]
    assert table["condition"][0] < 0.02 and abs(table["condition"][0] - table["chance:condition"][0]) < 0.02


def test_bad_conditions_are_refused(corpus: Path) -> None:
    with pytest.raises(ConfigError, match="changes the length"):
        _fbank(corpus, "clean,speed:factor=1.1")
    with pytest.raises(ConfigError, match="at least two conditions"):
        _fbank(corpus, "noise:snr=0")
    with pytest.raises(ConfigError, match="at least 2 clusters"):
        _fbank(corpus, "clean,noise", k=1)


def test_cli_writes_json_per_layer_and_is_deterministic(corpus: Path, tmp_path: Path, capsys) -> None:
    argv = ["analyze", "invariance", "--upstream", "hubert_tiny", "--upstream", "fbank_raw",
            "--corpus", str(corpus), "--conditions", "clean,noise:snr=0,reverb:rt60=0.8,pitch:semitones=3",
            "--k", "6", "--max-frames", "300", "--max-cuts", "10"]
    assert main([*argv, "--out", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["conditions"] == ["clean", "noise:snr=0", "reverb:rt60=0.8", "pitch:semitones=3"]
    hubert = first["upstreams"]["hubert_tiny"]
    layers = len(load_upstream("hubert_tiny").hidden_sizes)
    assert hubert["cuts"] == 10 and hubert["frames"] == 4 * hubert["positions"]
    assert all(len(hubert["nmi"][m]) == layers for m in ("condition", "phone", "chance:condition"))
    assert all(0.0 <= v <= 1.0 for v in hubert["nmi"]["condition"] + hubert["nmi"]["phone"])
    assert "hubert_tiny" in printed and "NMI condition (chance)" in printed
    assert main([*argv, "--out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["upstreams"] == first["upstreams"]


def test_without_phone_alignments_the_phone_is_missing(corpus: Path, tmp_path: Path) -> None:
    result = run_invariance(["fbank_raw"], corpus, ["clean", "noise:snr=0"], tmp_path / "ks.json",
                            subset="ks", k=4, max_frames=200)
    entry = result["upstreams"]["fbank_raw"]
    assert entry["nmi"]["phone"] is None and "phone_alignment" in entry["missing"]["phone"]
    assert len(entry["nmi"]["condition"]) == 1


def test_cli_errors_are_one_line(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(["analyze", "invariance", "--upstream", "fbank_raw", "--corpus", str(corpus),
                 "--conditions", "clean,speed", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changes the length" in err[0] and not (tmp_path / "x.json").exists()

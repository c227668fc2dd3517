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
    # the 2-D picture shows it too: a projected frame's nearest neighbour mostly shares its condition
    projection = result["projection"]
    assert projection["layer"] == 0 and len(projection["xy"]) == len(projection["condition"]) == 800
    assert len(projection["phone"]) == 800 and set(projection["condition"]) == {0, 1}
    assert _neighbour_agreement(projection) > 0.9


def _neighbour_agreement(projection: dict) -> float:
    """Share of projected points whose nearest other point has the same condition."""
    xy, condition = np.asarray(projection["xy"]), np.asarray(projection["condition"])
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    return float((condition[distance.argmin(1)] == condition).mean())


def test_a_condition_that_changes_nothing_is_at_chance(corpus: Path) -> None:
    result = _fbank(corpus, "clean,noise:snr=90", k=8, max_frames=400, projection_points=300)
    table = result["nmi"]
    assert table["condition"][0] < 0.02 and abs(table["condition"][0] - table["chance:condition"][0]) < 0.02
    assert len(result["projection"]["xy"]) == 300 and _neighbour_agreement(result["projection"]) < 0.75


def test_bad_conditions_are_refused(corpus: Path) -> None:
    with pytest.raises(ConfigError, match="changes the length"):
        _fbank(corpus, "clean,speed:factor=1.1")
    with pytest.raises(ConfigError, match="at least two conditions"):
        _fbank(corpus, "noise:snr=0")
    with pytest.raises(ConfigError, match="at least 2 clusters"):
        _fbank(corpus, "clean,noise", k=1)
    with pytest.raises(ConfigError, match="projection layer 3"):
        _fbank(corpus, "clean,noise", projection_layer=3)


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
    assert len(entry["nmi"]["condition"]) == 1 and entry["projection"]["phone"] is None


def test_report_shows_the_table_and_the_projections(corpus: Path, tmp_path: Path) -> None:
    from test_report import parse

    from speechrep.bench.leaderboard import write_summary
    from speechrep.bench.report import write_report

    row = {"upstream": "fbank_raw", "task": "ks", "metric": "accuracy", "higher_is_better": True,
           "percent": True, "best_value": 1.0, "dev": {"accuracy": 0.5}, "test": {"accuracy": 0.5},
           "layer_weights": [1.0], "lr": 0.01}
    write_summary([row], tmp_path)
    assert '<section id="invariance">' not in write_report(tmp_path).read_text()
    assert main(["analyze", "invariance", "--upstream", "fbank_raw", "--upstream", "hubert_tiny",
                 "--corpus", str(corpus), "--conditions", "clean,noise:snr=0", "--k", "4",
                 "--max-frames", "200", "--max-cuts", "6", "--projection-points", "150",
                 "--out", str(tmp_path / "invariance.json")]) == 0
    page = write_report(tmp_path).read_text()
    assert '<section id="invariance">' in page and '<a href="#invariance">Noise invariance</a>' in page
    table = parse(page).table("invariance")
    layers = len(load_upstream("hubert_tiny").hidden_sizes)
    assert len(table) == 1 + 1 + layers  # header, fbank_raw's one hidden state, hubert_tiny's
    assert page.count('alt="fbank_raw: 2-D projection of hidden state 0"') == 1
    assert page.count(f'alt="hubert_tiny: 2-D projection of hidden state {layers - 1}"') == 1


def test_cli_errors_are_one_line(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(["analyze", "invariance", "--upstream", "fbank_raw", "--corpus", str(corpus),
                 "--conditions", "clean,speed", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changes the length" in err[0] and not (tmp_path / "x.json").exists()

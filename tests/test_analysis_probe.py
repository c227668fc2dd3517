"""`speechrep probe` on the tiny synthetic corpus, and the linear CKA it reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechrep.analysis import probe as probe_module
from speechrep.analysis.probe import (
    ProbeConfig,
    best_layer,
    format_probe,
    integration_setups,
    probe,
    run_folder,
)
from speechrep.analysis.similarity import (
    cca,
    labels_at,
    layer_similarity,
    linear_cka,
    nearest,
    pwcca,
    similarity_table,
    svcca,
)
from speechrep.bench.report import write_report
from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.data.synth import make_synthetic_corpus
from speechrep.downstream import runner
from speechrep.downstream.features import FeatureSource
from speechrep.upstream import load_upstream

FAST = ["train.max_steps=3", "train.eval_every=3", "train.log_every=3"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `pr` subset of the tiny synthetic corpus: sentences with phone and word alignments."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_corpus(root, preset="tiny", seed=0, subsets=["pr"], num_workers=1)
    return root


def _counting_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the run directory of every training run the runner starts (or resumes)."""
    started: list[Path] = []
    original = runner.run_one

    def counted(spec, cfg, choice, source, corpus_dir, run_dir, *args, **kwargs):  # noqa: ANN001, ANN202
        started.append(Path(run_dir))
        return original(spec, cfg, choice, source, corpus_dir, run_dir, *args, **kwargs)

    monkeypatch.setattr(runner, "run_one", counted)
    return started


@pytest.fixture(scope="module")
def probed(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[Path]]:
    """One probe sweep of hubert_tiny on PF: (out folder, its summary, the run directories it trained)."""
    out = tmp_path_factory.mktemp("probe")
    with pytest.MonkeyPatch.context() as mp:
        started = _counting_runs(mp)
        summary = probe(ProbeConfig(["hubert_tiny"], ["pf"], synth, out, preset="tiny", overrides=FAST))
    return out, summary, started


# ------------------------------------------------------------------------------------------------------- CKA

def _direct_unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC on explicit n×n Gram matrices (no centring: the estimator needs none)."""
    n = len(x)

    def hsic(k: np.ndarray, lk: np.ndarray) -> float:
        k, lk = k.copy(), lk.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(lk, 0.0)
        one = np.ones(n)
        return (np.trace(k @ lk) + (one @ k @ one) * (one @ lk @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * one @ k @ lk @ one) / (n * (n - 3))

    kx, ky = x @ x.T, y @ y.T
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_cka_properties() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.5 * x @ rotation + 2.0) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    y = x[:, :5] @ rng.normal(size=(5, 7)) + rng.normal(size=(300, 7))
    assert linear_cka(x, y) == pytest.approx(linear_cka(0.1 * x @ rotation, 7.0 * y), abs=1e-9)
    assert 0.1 < linear_cka(x, y) < 0.9
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    independent = rng.normal(size=(2000, 40))
    assert abs(linear_cka(rng.normal(size=(2000, 30)), independent)) < 0.02
    small_x, small_y = x[:60, :5], y[:60]
    assert linear_cka(small_x, small_y) == pytest.approx(_direct_unbiased_cka(small_x, small_y), abs=1e-10)
    with pytest.raises(ValueError):
        linear_cka(x[:3], y[:3])


def _direct_canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """√eig(Sxx⁻¹ Sxy Syy⁻¹ Syx), descending: the textbook eigen-solution (full-rank sides only)."""
    x, y = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    eig = np.linalg.eigvals(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)).real
    return np.sqrt(np.clip(np.sort(eig)[::-1][:min(x.shape[1], y.shape[1])], 0.0, 1.0))


def test_cca_measures() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10)) @ rng.normal(size=(10, 10))
    mix = rng.normal(size=(10, 10)) + 3.0 * np.eye(10)  # invertible, far from orthogonal
    assert cca(x, x) == pytest.approx(np.ones(10), abs=1e-9)
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-9) and pwcca(x, x) == pytest.approx(1.0, abs=1e-9)
    # CCA is invariant to any invertible linear map of a side, CKA only to rotations and isotropic scaling
    assert cca(x, x @ mix + 2.0) == pytest.approx(np.ones(10), abs=1e-9)
    assert pwcca(x, x @ mix) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(x @ mix, x) == pytest.approx(1.0, abs=1e-9)
    assert svcca(x, x @ mix, keep_variance=1.0) == pytest.approx(1.0, abs=1e-9)
    # SVCCA's 99 % reduction is invariant only to maps that keep the leading subspace: rotations and scaling
    rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert svcca(x, 3.0 * x @ rotation) == pytest.approx(1.0, abs=1e-9)
    assert 0.8 < svcca(x, x @ mix) < 1.0
    assert linear_cka(x, x @ mix) < 0.9
    # against the textbook eigen-solution and scikit-learn's iterative CCA
    y = x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(400, 4))
    rho = cca(x, y)
    assert rho == pytest.approx(_direct_canonical_correlations(x, y), abs=1e-8)
    assert 0.0 < rho[-1] < rho[0] < 1.0 and len(rho) == 4
    from sklearn.cross_decomposition import CCA
    u, v = CCA(n_components=1, max_iter=5000, tol=1e-12).fit(x, y).transform(x, y)
    assert rho[0] == pytest.approx(abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1]), abs=1e-6)
    assert min(rho) <= svcca(x, y) <= max(rho) and min(rho) <= pwcca(x, y) <= max(rho)
    # independent features, n ≫ p: near 0; a rank-deficient one-hot side needs no regularisation
    big_x, big_y = rng.normal(size=(20000, 20)), rng.normal(size=(20000, 10))
    assert svcca(big_x, big_y) < 0.05 and pwcca(big_x, big_y) < 0.05
    labels = rng.integers(5, size=400)
    onehot = np.eye(5)[labels]
    assert len(cca(x, onehot)) == 4  # rank classes − 1 after centring
    assert cca(onehot, onehot) == pytest.approx(np.ones(4), abs=1e-9)
    with pytest.raises(ValueError):
        svcca(x[:3], y[:3])


def test_similarity_table_and_its_chance_level() -> None:
    rng = np.random.default_rng(1)
    target = rng.normal(size=(3000, 8))
    related = target @ rng.normal(size=(8, 40)) + 0.1 * rng.normal(size=(3000, 40))
    layers = [related, rng.normal(size=(3000, 40))]
    table = similarity_table(layers, {"t": target}, seed=0)
    assert set(table) == {"cka", "svcca", "pwcca", "chance:svcca", "chance:pwcca"}
    assert table["pwcca"]["t"][0] > 0.95
    assert table["cka"]["t"][0] == pytest.approx(linear_cka(layers[0], target), abs=1e-6)
    assert table["svcca"]["t"][0] == pytest.approx(svcca(layers[0], target), abs=1e-6)
    assert table["pwcca"]["t"][1] == pytest.approx(pwcca(layers[1], target), abs=1e-6)
    for measure in ("svcca", "pwcca"):  # unrelated layer, and the shuffled target: both at the chance level
        chance = table[f"chance:{measure}"]["t"]
        assert max(chance) < 0.2 and abs(table[measure]["t"][1] - chance[1]) < 0.05


def test_frame_alignment_helpers() -> None:
    segments = [("a", 0.1, 0.3), ("b", 0.3, 0.5)]
    assert labels_at(segments, np.array([0.05, 0.1, 0.29, 0.3, 0.49, 0.5, 0.9])).tolist() == \
        ["<sil>", "a", "a", "b", "b", "<sil>", "<sil>"]
    grid = np.array([0.0, 10.0, 20.0])
    assert nearest(grid, np.array([-3.0, 4.0, 6.0, 15.0, 99.0])).tolist() == [0, 0, 1, 1, 2]
    assert nearest(np.array([5.0]), np.array([0.0, 9.0])).tolist() == [0, 0]


def test_log_mel_upstream_is_log_mel_and_a_missing_alignment_is_reported(synth: Path) -> None:
    """The raw log-mel baseline against the log-mel target: the same frames, so CKA 1; no word alignment in
    the cuts: no word target, and why."""
    cuts = load_cuts(synth, "pr", "dev")
    for cut in cuts:
        cut.supervisions[0].custom.pop("word_alignment")
    source = FeatureSource("fbank_raw", load_upstream("fbank_raw"))  # no cache: the upstream runs live
    result = layer_similarity(source, cuts, max_frames=500, seed=1)
    assert result["frames"] == 500
    assert result["targets"]["log-mel"] == [pytest.approx(1.0, abs=1e-6)]
    assert 0.0 < result["targets"]["phone"][0] < 0.9
    assert result["targets"]["word"] is None and "word_alignment" in result["missing"]["word"]
    assert result["cca"]["svcca"]["log-mel"] == [pytest.approx(1.0, abs=1e-6)]
    assert result["cca"]["pwcca"]["log-mel"] == [pytest.approx(1.0, abs=1e-6)]
    assert result["cca"]["pwcca"]["word"] is None
    assert result["classes"]["speaker"] == len({c.supervisions[0].speaker for c in cuts})
    assert 50 < result["pitch_frames"] < 500  # eSpeak speech: roughly half of the frames are voiced
    for name in ("speaker", "pitch"):
        assert 0.0 < result["targets"][name][0] < 0.9
        assert result["cca"]["chance:pwcca"][name][0] < result["cca"]["pwcca"][name][0] <= 1.0


# ------------------------------------------------------------------------------------------------ the sweep

def test_integration_setups_and_best_layer() -> None:
    assert integration_setups(5, 12) == {"first2+best": [0, 1, 5], "best±1": [4, 5, 6]}
    assert integration_setups(0, 12) == {"first2+best": [0, 1], "best±1": [0, 1]}
    assert integration_setups(11, 12) == {"first2+best": [0, 1, 11], "best±1": [10, 11]}
    assert [run_folder(x) for x in ([3], [0, 1, 5], None)] == ["layer_3", "layers_0-1-5", "weighted_sum"]
    rows = [{"layer": 0, "dev": 0.3, "test": 0.1}, {"layer": 1, "dev": 0.2, "test": 0.9},
            {"layer": 2, "dev": float("nan"), "test": 0.0}]
    assert best_layer(rows, higher_is_better=True) == 0  # dev decides, never test; NaN never wins
    assert best_layer(rows, higher_is_better=False) == 1


def test_sweep_trains_each_layer_the_weighted_sum_and_the_integration_setups(probed) -> None:
    out, summary, started = probed
    pf = summary["upstreams"]["hubert_tiny"]["tasks"]["pf"]
    assert [r["layer"] for r in pf["layers"]] == [0, 1, 2]
    setups = integration_setups(pf["best_layer"], 3)
    assert [(r["name"], r["layers"]) for r in pf["integration"]] == list(setups.items())
    folders = {f"layer_{k}" for k in range(3)} | {"weighted_sum"} | {run_folder(v) for v in setups.values()}
    assert sorted(started) == sorted(out / "hubert_tiny" / "pf" / f for f in folders)  # each run once
    for row in [*pf["layers"], pf["weighted_sum"], *pf["integration"]]:
        results = json.loads((out / row["dir"] / "results.json").read_text())
        assert results["test"]["accuracy"] == row["test"] and results["dev"]["accuracy"] == row["dev"]
        assert len(results["layer_weights"]) == (3 if row["layers"] is None else len(row["layers"]))
        config = (out / row["dir"] / "config.yaml").read_text()
        assert ("layers: null" in config) == (row["layers"] is None)
    assert pf["best_layer"] == max(pf["layers"], key=lambda r: r["dev"])["layer"]
    assert pf["metric"] == "accuracy" and pf["higher_is_better"] is True
    assert len(list((out / "features").iterdir())) == 1  # one feature cache shared by every run
    assert json.loads((out / "probe.json").read_text()) == summary


def test_similarity_in_probe_json(probed) -> None:
    out, summary, _ = probed
    similarity = summary["upstreams"]["hubert_tiny"]["similarity"]
    assert similarity["subset"] == "pr" and similarity["split"] == "dev" and not similarity["missing"]
    assert 4 <= similarity["frames"] <= 4000
    for name in ("log-mel", "phone", "word", "speaker", "pitch"):
        values = similarity["targets"][name]
        assert len(values) == 3 and all(-0.1 < v <= 1.0 for v in values)
        for measure in ("svcca", "pwcca", "chance:svcca", "chance:pwcca"):
            assert len(similarity["cca"][measure][name]) == 3
            assert all(0.0 <= v <= 1.0 for v in similarity["cca"][measure][name])
    table = format_probe(summary)
    for title in ("linear CKA (unbiased)", "SVCCA (chance:", "PWCCA (chance:", "| chance |"):
        assert title in table
    assert "| layer | log-mel | phone | word | speaker | pitch |" in table
    assert similarity == json.loads((out / "hubert_tiny" / "similarity" / "similarity.json").read_text())


def test_rerun_skips_finished_runs(probed, synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, summary, _ = probed
    done = sorted(out.glob("hubert_tiny/**/*.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    started = _counting_runs(monkeypatch)
    monkeypatch.setattr(probe_module, "layer_similarity", lambda *a, **k: pytest.fail("CKA recomputed"))
    again = probe(ProbeConfig(["hubert_tiny"], ["pf"], synth, out, preset="tiny", overrides=FAST))
    assert started == [] and again == summary
    assert [p.stat().st_mtime_ns for p in done] == stamps


def test_cli_prints_the_table(synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(["probe", "--upstream", "melhubert_tiny", "--tasks", "pf", "--corpus", str(synth), "--out",
                 str(out), "--preset", "tiny", "--layers", "1,2", "--no-similarity", *FAST])
    printed = capsys.readouterr().out
    assert code == 0
    assert "melhubert_tiny on pf: accuracy (%) ↑" in printed
    for name in ("| layer 1", "| layer 2", "| weighted sum | all |", "| first2+best |", "| best±1 |"):
        assert name in printed
    assert "log-mel" not in printed  # --no-similarity
    summary = json.loads((out / "probe.json").read_text())
    assert [r["layer"] for r in summary["upstreams"]["melhubert_tiny"]["tasks"]["pf"]["layers"]] == [1, 2]
    assert format_probe(summary) == printed


@pytest.mark.parametrize("argv, message", [
    (["--upstream", "hubert_tiny", "--tasks", "nope"], "unknown task 'nope'"),
    (["--upstream", "no_such_upstream", "--tasks", "pf"], "--upstream no_such_upstream"),
    (["--upstream", "hubert_tiny", "--tasks", "pf", "--layers", "0,9"], "out of range"),
    (["--upstream", "hubert_tiny", "--tasks", "pf", "layers=[1]"], "the probe chooses the layers"),
])
def test_bad_input_is_one_line_exit_2(synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      argv: list[str], message: str) -> None:
    out = tmp_path / "bad"
    assert main(["probe", *argv, "--corpus", str(synth), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("speechrep probe: error:") and message in err
    assert not out.exists()  # nothing was written


def test_report_of_a_probe_folder_has_the_layer_analysis(probed) -> None:
    out, _, _ = probed
    page = write_report(out).read_text()
    section = page[page.index('<section id="layer-analysis">'):]
    section = section[:section.index("</section>")]
    assert "<h2>Layer analysis</h2>" in section
    assert 'alt="per-layer probing curves"' in section and 'alt="CKA of the layers of hubert_tiny"' in section
    assert section.count('src="data:image/png;base64,') == 2
    assert "first2+best" in section and "best±1" in section
    assert "hubert_tiny" in page[:page.index('<section id="layer-analysis">')]  # the weighted-sum leaderboard

"""Every utterance-level and content task end to end (fbank, fbank_global, hubert_tiny), tiny tone corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from downstream_corpus import make_corpus

from speechrep.downstream import runner
from speechrep.downstream.tasks import get_task, list_tasks
from speechrep.downstream.tasks.er import split_by_fold
from speechrep.downstream.tasks.pf import SILENCE, frame_labels
from speechrep.train import read_metrics

UPSTREAMS = ["fbank", "fbank_global", "hubert_tiny"]
FAST = ["train.max_steps=40", "train.eval_every=20", "er.folds=[1, 2]"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), ("sid", "er", "ic", "pr", "asr"))


@pytest.fixture(scope="module")
def results(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    rows = runner.benchmark(runner.BenchmarkConfig(UPSTREAMS, ["sid", "er", "ic", "pr", "pf", "asr"], corpus, out,
                                                   preset="tiny", overrides=FAST))
    return out, {(r["upstream"], r["task"]): r for r in rows}


def test_registry_lists_every_task() -> None:
    mine = ["ks", "sid", "er", "ic", "pr", "pf", "asr"]
    assert set(mine) <= set(list_tasks())
    for name in mine:
        spec = get_task(name)
        cfg = runner.load_task_config(spec, "tiny")
        assert cfg.subset and cfg.train.max_steps <= 200  # the tiny preset exists and is small
        assert runner.load_task_config(spec).train.max_steps >= 30_000  # defaults are sized for SUPERB


@pytest.mark.parametrize("task", ["sid", "er", "ic"])
def test_utterance_tasks(results, task: str) -> None:
    out, rows = results
    for up in UPSTREAMS:
        row = rows[(up, task)]
        assert 0.0 <= row["test"]["accuracy"] <= 1.0 and 0.0 <= row["dev"]["accuracy"] <= 1.0
        losses = [r["loss"] for r in read_metrics(_run_dir(out / up / task, row), "train")]
        assert losses[-1] < losses[0], f"{up}/{task} did not learn: {losses}"
    # Corpus-level normalisation keeps the class information: the head separates the tone classes.
    assert rows[("fbank_global", task)]["test"]["accuracy"] >= 0.9
    hub = rows[("hubert_tiny", task)]
    assert len(hub["layer_weights"]) == 3 and sum(hub["layer_weights"]) == pytest.approx(1.0, abs=1e-4)


def test_fbank_with_utterance_cmvn_is_at_chance_on_mean_pooled_tasks(results) -> None:
    _, rows = results
    # Per-utterance CMVN makes every mean-pooled vector the same: 4 balanced classes -> 25 %.
    assert rows[("fbank", "sid")]["test"]["accuracy"] == pytest.approx(0.25)
    assert rows[("fbank", "er")]["test"]["accuracy"] == pytest.approx(0.25)


def test_er_averages_over_folds(results) -> None:
    out, rows = results
    row = rows[("hubert_tiny", "er")]
    assert set(row["sub_runs"]) == {"fold1", "fold2"}
    for split in ("dev", "test"):
        mean = np.mean([row["sub_runs"][f][split]["accuracy"] for f in ("fold1", "fold2")])
        assert row[split]["accuracy"] == pytest.approx(mean)
    assert (out / "hubert_tiny" / "er" / "fold2" / "results.json").is_file()


def test_ic_reports_all_slots_and_each_slot(results) -> None:
    _, rows = results
    test = rows[("hubert_tiny", "ic")]["test"]
    assert {"accuracy_action", "accuracy_object", "accuracy_location"} <= set(test)
    each = (test["accuracy_action"], test["accuracy_object"], test["accuracy_location"])
    assert test["accuracy"] <= min(each)


def test_content_tasks(results) -> None:
    out, rows = results
    for up in UPSTREAMS:
        for task, metric in (("pr", "per"), ("pf", "accuracy"), ("asr", "wer")):
            row = rows[(up, task)]
            assert row["metric"] == metric and np.isfinite(row["test"][metric]) and row["test"][metric] >= 0
    assert rows[("fbank_global", "pr")]["test"]["per"] < 0.5
    assert rows[("fbank_global", "pf")]["test"]["accuracy"] > 0.8
    assert "cer" in rows[("fbank", "asr")]["test"]
    asr = rows[("fbank_global", "asr")]
    assert asr["test"]["cer"] < 1.0
    losses = [r["loss"] for r in read_metrics(out / "fbank_global" / "asr", "train")]
    assert losses[-1] < 0.7 * losses[0]


def test_frame_labels_follow_the_alignment() -> None:
    classes = {SILENCE: 0, "AA": 1, "B": 2}
    # frames of 20 ms: centres 10, 30, 50, 70, 90, 110 ms
    labels = frame_labels([("AA", 0.02, 0.06), ("B", 0.06, 0.08), ("ZZ", 0.10, 0.2)], 6, 0.02, classes)
    assert labels.tolist() == [0, 1, 1, 2, 0, -1]


def test_er_fold_split_is_disjoint(corpus: Path) -> None:
    from lhotse import CutSet

    from speechrep.data.batching import load_cuts

    pool = CutSet.from_cuts(c for s in ("train", "dev", "test") for c in load_cuts(corpus, "er", s))
    train, dev, test = split_by_fold(pool, 3)
    folds = lambda cs: {c.supervisions[0].custom["fold"] for c in cs}  # noqa: E731
    assert folds(test) == {3} and folds(dev) == {1} and folds(train) == {2}
    assert len(train) + len(dev) + len(test) == len(pool)


def _run_dir(pair_dir: Path, row: dict) -> Path:
    """The run directory holding metrics.jsonl (the first fold for a task with sub-runs)."""
    first = sorted(row["sub_runs"])[0]
    return pair_dir if first == "main" else pair_dir / first


def test_results_json_is_complete(results) -> None:
    out, rows = results
    row = json.loads((out / "hubert_tiny" / "pr" / "results.json").read_text())
    assert row == rows[("hubert_tiny", "pr")]
    vocab = 2 + 6  # blank, <unk>, the six phones of the tone corpus
    assert row["params"]["trainable"] == (32 + 1) * vocab + 3  # linear head + one weight per layer
    assert row["params"]["upstream"] == sum(p.numel() for p in runner.load_upstream_module(
        runner.parse_upstream("hubert_tiny")).parameters())
    assert row["lr"] == pytest.approx(1e-2) and row["wall_time_s"] > 0

"""The SUPERB-style score and the leaderboard on hand-made numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechrep.bench.leaderboard import write_summary
from speechrep.bench.score import Reference, load_references, references_from_rows, superb_scores, task_score
from speechrep.errors import ConfigError


def _row(upstream: str, task: str, value: float) -> dict:
    higher = task != "pr"
    return {"upstream": upstream, "task": task, "metric": "accuracy" if higher else "per",
            "higher_is_better": higher, "best_value": 1.0 if higher else 0.0,
            "test": {"accuracy" if higher else "per": value}}


def test_task_score_is_linear_between_baseline_and_topline() -> None:
    acc = Reference(baseline=0.25, topline=1.0)
    assert task_score(0.25, acc) == 0.0
    assert task_score(1.0, acc) == 1000.0
    assert task_score(0.625, acc) == pytest.approx(500.0)
    assert task_score(0.10, acc) == pytest.approx(-200.0)  # worse than the baseline: negative, not clipped
    per = Reference(baseline=0.80, topline=0.0)  # lower is better: the same formula flips the direction
    assert task_score(0.20, per) == pytest.approx(750.0)
    assert task_score(0.90, per) == pytest.approx(-125.0)
    with pytest.raises(ConfigError):
        task_score(0.5, Reference(0.3, 0.3))


def test_scores_use_the_fbank_row_as_baseline_and_average_over_tasks() -> None:
    rows = [_row("fbank", "ks", 0.25), _row("fbank", "pr", 0.80),
            _row("hubert", "ks", 0.85), _row("hubert", "pr", 0.40)]
    refs = references_from_rows(rows)
    assert refs == {"ks": Reference(0.25, 1.0), "pr": Reference(0.80, 0.0)}
    scores = superb_scores(rows, refs)
    assert scores["fbank"] == 0.0
    assert scores["hubert"] == pytest.approx((800.0 + 500.0) / 2)
    # Given references (e.g. published values for real corpora) take precedence over the fbank row.
    given = references_from_rows(rows, given={"pr": Reference(0.5, 0.1)})
    assert superb_scores(rows, given)["hubert"] == pytest.approx((800.0 + 250.0) / 2)


def test_summary_files(tmp_path: Path) -> None:
    rows = [_row("fbank", "ks", 0.25), _row("hubert", "ks", 0.85)]
    table = write_summary(rows, tmp_path)
    assert "| hubert | 85.00 | 800.0 |" in table
    assert "ks accuracy ↑" in table
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["scores"] == {"fbank": 0.0, "hubert": pytest.approx(800.0)}
    assert len(data["rows"]) == 2 and (tmp_path / "leaderboard.md").read_text().startswith("# Leaderboard")


def test_references_from_yaml(tmp_path: Path) -> None:
    good = tmp_path / "refs.yaml"
    good.write_text("pr: {baseline: 0.82, topline: 0.0}\nks: {baseline: 0.0863, topline: 1}\n")
    assert load_references(good) == {"pr": Reference(0.82, 0.0), "ks": Reference(0.0863, 1.0)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("pr: {baseline: low, topline: 0}\n")
    with pytest.raises(ConfigError, match="'pr' needs numeric"):
        load_references(bad)
    bad.write_text("pr: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_references(bad)


def test_rates_print_in_percent_and_other_units_as_they_are() -> None:
    from speechrep.bench.leaderboard import format_metric
    from speechrep.downstream.tasks import get_task

    base = {"metric": "m", "test": {"m": 0.5}}
    assert format_metric({**base, "best_value": 1.0}) == "50.00"  # an accuracy, by its best value
    assert format_metric({**base, "best_value": 1.0, "percent": False}) == "0.500"  # the task said otherwise
    for name in ("prosody", "prosody_future"):  # cents and MSE: never ×100, though their best value is 0
        spec = get_task(name)
        assert not spec.shown_as_percent
    assert get_task("pr").shown_as_percent and not get_task("se").shown_as_percent

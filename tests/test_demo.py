"""`speechrep demo` end to end on the tiny corpus with a few steps per stage: every stage runs, resumes, reports."""
import json
from pathlib import Path

import pytest

from speechrep.bench.demo import CONFIG_PATH, DemoConfig, _Lanes, _Stages
from speechrep.cli import main
from speechrep.config import load_config
from speechrep.errors import SpeechrepError


def test_demo_config_pretrains_two_families_and_benchmarks_six_tasks() -> None:
    cfg = load_config(DemoConfig, CONFIG_PATH)
    assert len({m.method for m in cfg.models}) >= 2
    assert len(cfg.tasks) >= 6 and {"fbank", "fbank_global"} <= set(cfg.baselines)


def test_a_failing_lane_command_raises_with_its_stage_and_is_not_recorded(tmp_path: Path, capsys) -> None:
    stages = _Stages(tmp_path, DemoConfig())
    lanes = _Lanes(stages, 1)
    with pytest.raises(SpeechrepError, match="stage 'pretrain x' failed .*speechrep pretrain --method nope"):
        lanes.run({"x": lambda lane: lanes.command(lane, "pretrain x", ["pretrain", "--method", "nope",
                                                                         "--data", str(tmp_path), "--out",
                                                                         str(tmp_path / "run")])})
    assert "[x] " in capsys.readouterr().err  # the child's output, marked with its lane
    assert not (tmp_path / "demo.json").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path, capsys) -> None:
    args = ["demo", "--out", str(tmp_path), "--preset", "tiny",
            "pretrain_overrides=[train.max_steps=4, train.eval_every=2]",
            "downstream_overrides=[train.max_steps=4, train.eval_every=2]"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "bench" / "results.json").read_text())
    cfg = load_config(DemoConfig, CONFIG_PATH)
    upstreams = set(cfg.baselines) | {m.name for m in cfg.models} | {f"{m.name}@random" for m in cfg.models}
    assert {(r["upstream"], r["task"]) for r in summary["rows"]} == {(u, t) for u in upstreams for t in cfg.tasks}
    assert all(u in printed for u in upstreams) and "report.html" in printed
    html = (tmp_path / "report.html").read_text()
    assert all(u in html for u in upstreams)
    stages = json.loads((tmp_path / "demo.json").read_text())["stages"]
    assert {"corpus", "benchmark", "report"} <= set(stages)
    assert "wall clock" in html  # the demo's own wall time, written before the report
    # Started again, every stage finds its work done.
    assert main(args) == 0
    again = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert again["scores"] == summary["scores"]

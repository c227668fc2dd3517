"""The report's Robustness section: a table of test metrics per distortion condition for each upstream × task
and degradation plots (metric against severity), shown only when rows carry `test_by_condition`."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from test_report import parse

from speechrep.bench.leaderboard import write_summary
from speechrep.bench.report import write_report
from speechrep.bench.report.robustness import condition_point, degradation_families
from speechrep.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# in the table's order: clean, then each family from mild to severe, then those without a severity
CONDITIONS = ["clean", "noise:snr=5", "noise:snr=10,kind=white", "noise:snr=0,kind=white", "reverb:rt60=0.8",
              "telephone", "future:x=1"]


def _row(upstream: str, task: str, clean: float, drop: float, **extra) -> dict:
    """A results.json row as the runner writes it, tested under CONDITIONS (each worse than the last)."""
    rate = task != "se"
    metric = "accuracy" if rate else "pesq"
    by_condition = {c: {metric: clean - drop * i} for i, c in enumerate(CONDITIONS)}
    return {"upstream": upstream, "task": task, "metric": metric, "higher_is_better": True, "percent": rate,
            "best_value": 1.0 if rate else 4.64, "dev": {metric: clean}, "test": {metric: clean},
            "layer_weights": [0.5, 0.5], "lr": 0.01, "test_by_condition": by_condition, **extra}


def test_condition_points_and_families() -> None:
    white = condition_point("noise:snr=0,kind=white")
    assert (white.kind, white.family, white.severity) == ("noise", "noise (kind=white)", 0.0)
    pink = condition_point("noise")
    assert (pink.family, pink.severity) == ("noise (kind=pink)", 10.0)
    assert condition_point("reverb:rt60=0.8").family == "reverb (drr=3)"
    assert condition_point("pitch:semitones=-2").severity == -2.0
    assert condition_point("telephone").severity is None and condition_point("clean").kind == "clean"
    unknown = condition_point("future:x=1")  # a kind this version does not know: table only
    assert (unknown.kind, unknown.severity) == ("", None)
    families = degradation_families([_row("a", "ks", 0.9, 0.1)])
    assert list(families) == ["noise (kind=pink)", "noise (kind=white)", "reverb (drr=3)"]
    assert [p.severity for p in families["noise (kind=white)"]] == [0.0, 10.0]


def test_section_table_and_plots(tmp_path: Path) -> None:
    rows = [_row("fbank", "ks", 0.90, 0.10), _row("hubert_tiny", "ks", 0.80, 0.05),
            _row("hubert_tiny@random", "ks", 0.50, 0.02),
            _row("hubert_tiny", "se", 2.50, 0.20, train_conditions=["clean", "noise:snr=5"]),
            {**_row("fbank", "se", 1.50, 0.1), "test_by_condition": None}]  # not tested: not in the section
    write_summary(rows, tmp_path)
    page = write_report(tmp_path).read_text()
    parsed = parse(page)
    assert '<section id="robustness">' in page and '<a href="#robustness">Robustness</a>' in page
    table = parsed.table("robustness")
    header = [c["text"] for c in table[0]]
    assert header == ["upstream", "task", "metric", "trained on", *CONDITIONS]
    lines = {(r[0]["text"], r[1]["text"]): {h: c for h, c in zip(header, r)} for r in table[1:]}
    assert list(lines) == [("fbank", "ks"), ("hubert_tiny", "ks"), ("hubert_tiny@random", "ks"),
                           ("hubert_tiny", "se")]  # by task, then upstream; the untested row is left out
    ks = lines["hubert_tiny", "ks"]
    assert ks["metric"]["text"] == "accuracy (%) ↑" and ks["trained on"]["text"] == "clean"
    assert ks["clean"]["text"] == "80.00" and ks["noise:snr=0,kind=white"]["text"] == "65.00"
    assert ks["noise:snr=0,kind=white"]["title"] == "-15.00 points against clean"
    se = lines["hubert_tiny", "se"]
    assert se["trained on"]["text"] == "clean, noise:snr=5" and se["metric"]["text"] == "pesq ↑"
    assert se["reverb:rt60=0.8"]["text"] == f"{2.5 - 4 * 0.2:.3f}"
    assert se["reverb:rt60=0.8"]["title"] == "-0.800 against clean"
    assert "--train-conditions" in page  # the note says what "trained on" means
    alts = [img["alt"] for img in parsed.images]
    severity = [a for a in alts if a.startswith("test metric against severity")]
    assert severity == ["test metric against severity: noise (kind=pink)",
                        "test metric against severity: noise (kind=white)",
                        "test metric against severity: reverb (drr=3)"]
    from matplotlib.image import imread

    for img in parsed.images[-3:]:
        png = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"))
        pixels = imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05


def test_table_only_when_no_condition_has_a_severity(tmp_path: Path) -> None:
    row = _row("fbank", "ks", 0.9, 0.1)
    row["test_by_condition"] = {"clean": {"accuracy": 0.9}, "telephone": {"accuracy": 0.6}}
    write_summary([row], tmp_path)
    parsed = parse(write_report(tmp_path).read_text())
    assert [c["text"] for c in parsed.table("robustness")[1]][-2:] == ["90.00", "60.00"]
    assert not any(img["alt"].startswith("test metric against severity") for img in parsed.images)


def test_no_section_without_conditions(tmp_path: Path) -> None:
    row = _row("fbank", "ks", 0.9, 0.1)
    del row["test_by_condition"]
    write_summary([row], tmp_path)
    page = write_report(tmp_path).read_text()
    assert 'id="robustness"' not in page and "Robustness" not in page


def test_report_of_a_real_benchmark_with_train_and_test_conditions(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["benchmark", "--upstream", "fbank_global", "--tasks", "ks", "--corpus", str(corpus),
                 "--out", str(out), "--preset", "tiny", "--train-conditions", "clean,noise:snr=5",
                 "--test-conditions", "clean,noise:snr=20,noise:snr=0,telephone",
                 "train.max_steps=10", "train.eval_every=5"]) == 0
    assert main(["report", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    parsed = parse((out / "report.html").read_text())
    (line,) = parsed.table("robustness")[1:]
    assert [c["text"] for c in line[:4]] == ["fbank_global", "ks", "accuracy (%) ↑", "clean, noise:snr=5"]
    assert [c["text"] for c in line[4:]] == [f"{100 * row['test_by_condition'][c]['accuracy']:.2f}"
                                             for c in ("clean", "noise:snr=20", "noise:snr=0", "telephone")]
    assert [c["text"] for c in parsed.table("robustness")[0][4:]] == ["clean", "noise:snr=20", "noise:snr=0",
                                                                      "telephone"]
    assert [img["alt"] for img in parsed.images][-1] == "test metric against severity: noise (kind=pink)"

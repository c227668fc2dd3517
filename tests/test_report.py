"""The HTML report from a real tiny demo layout: a benchmark on the tone corpus and a short APC pre-training."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_corpus import make_corpus

from speechrep.bench.leaderboard import write_summary
from speechrep.bench.report import (
    RunDir,
    accuracy_key,
    downstream_curve,
    layer_weight_matrix,
    plot_pretrain_curves,
    read_run_dir,
    write_report,
)
from speechrep.cli import main
from speechrep.downstream.runner import BenchmarkConfig, benchmark
from speechrep.errors import ConfigError
from speechrep.pretrain import run_method

UPSTREAMS = ["fbank", "hubert_tiny", "hubert_tiny@random"]
TASKS = ["ks", "er"]
FAST = ["train.max_steps=10", "train.eval_every=5", "train.log_every=5"]
HOSTILE_COMMAND = "speechrep demo --out '<script>alert(1)</script>' && echo \"a&b\""
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-shaped folder: bench/ from a real benchmark (ER with two folds), pretrain/apc/ from a real run."""
    root = tmp_path_factory.mktemp("demo")
    corpus = make_corpus(root / "corpus", ("ks", "er"))
    rows = benchmark(BenchmarkConfig(UPSTREAMS, TASKS, corpus, root / "bench", preset="tiny",
                                     overrides=[*FAST, "er.folds=[1,2]"]))
    write_summary(rows, root / "bench")
    run_method("apc", corpus / "ks" / "train.jsonl.gz", root / "pretrain" / "apc", preset="tiny",
               overrides=[*FAST, "data.min_utterance=0.2"])
    demo = {"config": {"seed": 0, "tasks": TASKS},
            "stages": {"pretrain apc": {"command": HOSTILE_COMMAND, "wall_time_s": 12.5},
                       "benchmark": {"command": "speechrep benchmark ...", "wall_time_s": 130.0}}}
    (root / "demo.json").write_text(json.dumps(demo))
    kmeans = {"describe": "mfcc (stacked x2)", "k": 100, "used_clusters": 94, "splits": {"dev": {"label_quality": {
        "phone_purity": 0.38079, "cluster_purity": 0.21109, "pnmi": 0.48032}}}}
    (root / "kmeans" / "hubert").mkdir(parents=True)
    (root / "kmeans" / "hubert" / "kmeans.json").write_text(json.dumps(kmeans))
    return root


@pytest.fixture(scope="module")
def page(demo_dir: Path) -> str:
    return write_report(demo_dir).read_text()


class PageParser(HTMLParser):
    """Checks that every element is closed in order and collects tables (cells and tooltips) and images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[dict] = []
        self.images: list[dict[str, str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(attributes)
        if tag == "table":
            self.tables.append({"class": attributes.get("class", ""), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
            self.tables[-1]["rows"][-1].append({"title": attributes.get("title"), "class": attributes.get("class")})
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1][-1]["text"] = "".join(self._cell).strip()
            self._cell = None
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table(self, css: str) -> list[list[dict]]:
        return next(t["rows"] for t in self.tables if t["class"] == css)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def grid(rows: list[list[dict]]) -> dict[tuple[str, str], dict]:
    """(row name, column header) → cell of a leaderboard table."""
    header = [c["text"] for c in rows[0]]
    return {(r[0]["text"], header[j]): cell for r in rows[1:] for j, cell in enumerate(r) if j}


def test_page_parses_and_lists_every_pair_of_results_json(demo_dir: Path, page: str) -> None:
    summary = json.loads((demo_dir / "bench" / "results.json").read_text())
    parsed = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    test_cells, dev_cells = grid(parsed.table("leaderboard test")), grid(parsed.table("leaderboard dev"))
    assert len(summary["rows"]) == len(UPSTREAMS) * len(TASKS)
    for row in summary["rows"]:
        column = f"{row['task']} accuracy (%) ↑"
        cell = test_cells[row["upstream"], column]
        assert cell["text"] == f"{100 * row['test']['accuracy']:.2f}"
        assert dev_cells[row["upstream"], column]["text"] == f"{100 * row['dev']['accuracy']:.2f}"
        assert f"dev {100 * row['dev']['accuracy']:.2f}" in cell["title"]
    for upstream, score in summary["scores"].items():
        assert test_cells[upstream, "score ↑"]["text"] == f"{score:.1f}"
    # Bold marks the best test value of each task.
    for task in TASKS:
        best = max(r["test"]["accuracy"] for r in summary["rows"] if r["task"] == task)
        bold = [c["text"] for (u, col), c in test_cells.items() if col.startswith(task) and c["class"] == "best"]
        assert bold and set(bold) == {f"{100 * best:.2f}"}


def test_one_embedded_png_per_expected_plot(page: str) -> None:
    images = parse(page).images
    # fbank has one layer: no heat map; every other upstream one; one curve plot per pre-training run.
    assert [img["alt"] for img in images] == [
        "score per upstream", "layer weights of hubert_tiny", "layer weights of hubert_tiny@random",
        "pre-training curves of apc", "downstream learning curves"]
    from matplotlib.image import imread

    for img in images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        pixels = imread(io.BytesIO(base64.b64decode(img["src"][len(prefix):])), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300 and pixels[..., :3].std() > 0.05
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page and "<link" not in page


def test_plotted_numbers_come_from_the_run_files(demo_dir: Path) -> None:
    bench = demo_dir / "bench"
    rows = json.loads((bench / "results.json").read_text())["rows"]
    tasks, matrix = layer_weight_matrix(rows, "hubert_tiny")
    assert tasks == TASKS and matrix.shape == (2, 3)
    for task, weights in zip(tasks, matrix):
        row = next(r for r in rows if r["upstream"] == "hubert_tiny" and r["task"] == task)
        np.testing.assert_allclose(weights, row["layer_weights"])
        assert weights.sum() == pytest.approx(1.0, abs=1e-4)
    er = next(r for r in rows if r["upstream"] == "hubert_tiny" and r["task"] == "er")
    folds = []
    for fold in ("fold1", "fold2"):
        lines = (bench / "hubert_tiny" / "er" / fold / "metrics.jsonl").read_text().splitlines()
        folds.append([json.loads(x)["accuracy"] for x in lines if json.loads(x)["event"] == "eval"])
    steps, values = downstream_curve(bench, er)
    assert steps.tolist() == [5, 10]
    np.testing.assert_allclose(values, np.mean(folds, axis=0))


def test_provenance_commands_escaped_and_controls(demo_dir: Path, page: str) -> None:
    parsed = parse(page)
    commands = parsed.table("commands")
    assert [c["text"] for c in commands[1]] == ["pretrain apc", HOSTILE_COMMAND, "12 s"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page
    runs = parsed.table("runs")  # the first "runs" table lists the pre-training runs
    assert [c["text"] for c in runs[1][:3]] == ["apc", "apc", "10 / 10"]
    env = {r[0]["text"]: r[1]["text"] for r in parsed.table("env")[1:]}
    assert env["torch"] == torch.__version__ and "git revision" in env
    assert [c["text"] for c in parsed.table("kmeans")[1]] == [
        "hubert", "mfcc (stacked x2)", "94 / 100", "0.381", "0.211", "0.480"]
    rows = json.loads((demo_dir / "bench" / "results.json").read_text())["rows"]
    acc = {(r["upstream"], r["task"]): r["test"]["accuracy"] for r in rows}
    controls = grid(parsed.table("controls"))
    expected = 100 * (acc["hubert_tiny", "ks"] - acc["hubert_tiny@random", "ks"])
    assert controls["hubert_tiny", "ks accuracy (%) ↑ Δ"]["text"] == f"{expected:+.2f}"


def test_pretraining_accuracy_panel_only_where_logged(demo_dir: Path) -> None:
    apc = read_run_dir(demo_dir / "pretrain" / "apc")
    assert accuracy_key(apc) is None  # APC logs only its L1 loss
    hubert = RunDir(apc.path, {}, [{"event": "train", "step": 1, "loss": 4.0, "masked_acc": 0.01},
                                   {"event": "eval", "step": 1, "loss": 4.2, "mask_share": 0.5},
                                   {"event": "eval", "step": 2, "loss": 4.1, "masked_acc": 0.03}])
    assert accuracy_key(hubert) == "masked_acc"
    steps, values = hubert.curve("eval", "masked_acc")
    assert steps.tolist() == [2] and values.tolist() == [0.03]
    from matplotlib.image import imread

    wide, narrow = (imread(io.BytesIO(base64.b64decode(plot_pretrain_curves("x", run).split(",", 1)[1])))
                    for run in (hubert, apc))
    assert wide.shape[1] > narrow.shape[1]  # the accuracy panel sits beside the loss panel


def test_cli_on_a_benchmark_dir_and_one_line_errors(demo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench_report.html"
    assert main(["report", str(demo_dir / "bench"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    parsed = parse(out.read_text())
    assert [img["alt"] for img in parsed.images][-1] == "downstream learning curves"
    assert not any("pre-training" in img["alt"] for img in parsed.images)  # a bare benchmark has no pretrain/

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no results.json" in err and str(tmp_path) in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"rows": [{"upstream": "x", "task": "ks"}]}))
    with pytest.raises(ConfigError, match=r"bad/results.json: rows\[0\] lacks key 'metric'"):
        write_report(bad)


def test_hand_made_results_without_run_dirs(tmp_path: Path) -> None:
    """Rows only (runs deleted, copied elsewhere): a non-rate metric, a hostile name, no curves to draw."""
    rows = [{"upstream": name, "task": "se", "metric": "pesq", "higher_is_better": True, "best_value": 4.64,
             "dev": {"pesq": dev}, "test": {"pesq": test}, "layer_weights": weights, "lr": 1e-3}
            for name, dev, test, weights in [("fbank", 1.5, 1.25, [1.0]), ("a<b&c", 2.0, 2.3456, [0.7, 0.2, 0.1])]]
    write_summary(rows, tmp_path)
    parsed = parse(write_report(tmp_path).read_text())
    cells = grid(parsed.table("leaderboard test"))
    assert cells["a<b&c", "se pesq ↑"]["text"] == "2.346"  # PESQ is not a rate: no percent
    assert cells["a<b&c", "score ↑"]["text"] == f"{1000 * (2.3456 - 1.25) / (4.64 - 1.25):.1f}"
    assert [img["alt"] for img in parsed.images] == ["score per upstream", "layer weights of a<b&c"]
    assert "a<b&c" not in (tmp_path / "report.html").read_text()


def test_curve_of_the_selected_learning_rate_and_a_half_written_line(tmp_path: Path) -> None:
    """With an LR sweep the curve is the winner's run; a line a killed run left unfinished is skipped."""
    for lr, accuracy in (("0.01", 0.9), ("0.001", 0.4)):
        run = tmp_path / "up" / "ks" / f"lr{lr}"
        run.mkdir(parents=True)
        lines = [json.dumps({"event": "eval", "step": s, "accuracy": accuracy * s / 20}) for s in (10, 20)]
        (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"event": "eval", "st')
    row = {"upstream": "up", "task": "ks", "metric": "accuracy", "lr": 0.01, "sub_runs": {"main": {}}}
    steps, values = downstream_curve(tmp_path, row)
    assert steps.tolist() == [10, 20] and values.tolist() == [0.45, 0.9]


def test_rerun_overwrites_and_default_location(demo_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(demo_dir / "bench", copy, ignore=shutil.ignore_patterns("features", "checkpoints"))
    (copy / "report.html").write_text("stale")
    assert write_report(copy) == copy / "report.html"
    assert (copy / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_settings_section_shows_the_saved_config_and_what_each_row_trained(demo_dir: Path, page: str) -> None:
    parsed = parse(page)
    settings = {r[0]["text"]: r[1]["text"] for r in parsed.table("settings")[1:]}
    assert settings["tuning"] == "frozen" and settings["preset"] == "tiny"
    assert "er.folds=[1,2]" in settings["overrides"]
    rows = parsed.table("rows")
    header = [c["text"] for c in rows[0]]
    summary = json.loads((demo_dir / "bench" / "results.json").read_text())["rows"]
    assert len(rows) - 1 == len(summary)
    for cells, row in zip(rows[1:], summary):
        shown = dict(zip(header, (c["text"] for c in cells)))
        assert (shown["upstream"], shown["task"], shown["tuning"]) == (row["upstream"], row["task"], "frozen")
        assert shown["weights"] == str(row["upstream_weights"])[:16]


def test_synthesis_section_and_its_samples_travel_with_the_page(demo_dir: Path, tmp_path: Path) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    (copy / "synthesis" / "samples").mkdir(parents=True)
    sf.write(copy / "synthesis" / "samples" / "a.wav", np.zeros(160, np.float32), 16000)
    data = {"copy_synthesis": [{"system": "griffin-lim", "mcd_db": 1.5, "per": 0.2, "target_accept": 0.9}],
            "samples": [{"section": "copy", "title": "griffin-lim", "before": "samples/a.wav",
                         "after": "samples/a.wav"}]}
    (copy / "synthesis" / "synthesis.json").write_text(json.dumps(data))
    page = write_report(copy, out=tmp_path / "site" / "report.html").read_text()
    assert '<section id="synthesis">' in page and page.count("<audio") == 2
    assert (tmp_path / "site" / "synthesis" / "samples" / "a.wav").is_file()
    assert '<section id="synthesis">' not in write_report(demo_dir).read_text()

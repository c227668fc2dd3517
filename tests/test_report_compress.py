"""The report's Compression section: a real `compress_series` of melhubert_tiny and a hand-made benchmark
folder (config.yaml and results.json in the runner's schema) that names some of its steps."""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from test_report import grid, parse

from speechrep.bench.report import load_inputs, write_report
from speechrep.bench.report.compression import ORIGINAL, compression_points
from speechrep.compress.series import Config, compress_series

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TASKS = {"ks": 0.50, "sid": 0.20}  # task → test accuracy of the original; each step loses a little


def _compress(method: str, out: Path, keeps: list[float]) -> None:
    """One-shot `speechrep compress` of melhubert_tiny."""
    compress_series(method, "melhubert_tiny", out, cfg=Config(keep=keeps))


def _row(upstream: str, task: str, accuracy: float) -> dict:
    """One results.json row as `speechrep benchmark` writes it (the keys the report reads, and a few more)."""
    return {"upstream": upstream, "task": task, "metric": "accuracy", "higher_is_better": True,
            "percent": True, "best_value": 1.0, "dev": {"accuracy": accuracy + 0.01},
            "test": {"accuracy": accuracy},
            "dev_by_lr": {"0.01": {"accuracy": accuracy + 0.01}}, "layer_weights": [0.5, 0.5], "lr": 0.01,
            "params": {"trainable": 1234, "upstream": 0}, "preset": "tiny",
            "sub_runs": {"main": {"best_step": 10, "steps": 10, "dev": {"accuracy": accuracy + 0.01},
                                  "test": {"accuracy": accuracy}, "layer_weights": [0.5, 0.5]}},
            "tuning": "frozen", "upstream_lr": None, "upstream_weights": "0123456789abcdef",
            "wall_time_s": 1.0}


def _bench(folder: Path, specs: dict[str, str], scores: dict[str, float]) -> Path:
    """A benchmark folder: config.yaml naming `specs` (label → spec) and one row per upstream and task."""
    folder.mkdir(parents=True)
    lines = ["upstreams:", *(f"- {spec}" for spec in specs.values()),
             "tasks:", *(f"- {t}" for t in TASKS), "corpus: corpus", f"out: {folder.name}", "tuning: frozen",
             "lr_sweep: null", "random_init: false", "feature_cache: true", "features: []", "preset: tiny",
             "overrides: []", "overwrite: false"]
    (folder / "config.yaml").write_text("\n".join(lines) + "\n")
    rows = [_row(label, task, accuracy - scores[label])
            for label in specs for task, accuracy in TASKS.items()]
    references = {task: {"baseline": 0.1, "topline": 1.0} for task in TASKS}
    (folder / "results.json").write_text(json.dumps({"references": references, "rows": rows, "scores": {}}))
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """heads/ and ffn/ from compress_series; prune/ a hand-made unstructured step (sparse counts); orphan/
    a step folder without its compress.json."""
    root = tmp_path_factory.mktemp("compress")
    _compress("heads", root / "heads", [0.75, 0.5])
    _compress("ffn", root / "ffn", [0.5])
    shutil.copytree(root / "heads" / "keep_0.5", root / "prune" / "keep_0.5")
    meta = json.loads((root / "prune" / "keep_0.5" / "config.json").read_text())
    meta["provenance"].update(compress="prune", keep=0.5)
    (root / "prune" / "keep_0.5" / "config.json").write_text(json.dumps(meta))
    heads = json.loads((root / "heads" / "compress.json").read_text())
    full = heads["original"]
    step = {"keep": 0.5, "folder": "keep_0.5", "params": full["params"],
            "macs_per_second": full["macs_per_second"], "nonzero_params": full["params"] // 2,
            "sparse_macs_per_second": full["macs_per_second"] / 2,
            "train": {"steps": 3}}
    report = {"method": "prune", "upstream": "melhubert_tiny", "note": "hand-made", "original": full,
              "steps": [step]}
    (root / "prune" / "compress.json").write_text(json.dumps(report))
    shutil.copytree(root / "heads" / "keep_0.5", root / "orphan" / "keep_0.5")
    return root


@pytest.fixture(scope="module")
def bench(root: Path) -> Path:
    """The steps named three ways: relative to the benchmark's parent, absolute, and a path that is gone."""
    specs = {"fbank": "fbank", "melhubert_tiny": "melhubert_tiny",
             "melhubert_tiny@random": "melhubert_tiny@random",
             "heads_0.75": "heads_0.75=heads/keep_0.75",
             "heads_0.5": f"heads_0.5={root / 'heads' / 'keep_0.5'}",
             "ffn_0.5": "ffn_0.5=ffn/keep_0.5", "prune_0.5": "prune_0.5=prune/keep_0.5",
             "orphan": "orphan=orphan/keep_0.5", "gone": "gone=nowhere/keep_0.5"}
    scores = {"fbank": 0.3, "melhubert_tiny": 0.0, "melhubert_tiny@random": 0.2, "heads_0.75": 0.01,
              "heads_0.5": 0.04, "ffn_0.5": 0.02, "prune_0.5": 0.03, "orphan": 0.05, "gone": 0.06}
    return _bench(root / "bench", specs, scores)


def test_lines_start_at_the_original_and_follow_decreasing_keep(root: Path, bench: Path) -> None:
    lines = {line.label: line for line in load_inputs(bench).compression}
    # one line per compress folder; a method alone labels its line unless two folders share it
    assert list(lines) == ["heads (heads)", "ffn", "prune", "heads (orphan)"]
    heads = json.loads((root / "heads" / "compress.json").read_text())
    assert [(p.upstream, p.method, p.keep) for p in lines["heads (heads)"].points] == [
        ("melhubert_tiny", ORIGINAL, 1.0), ("heads_0.75", "heads", 0.75), ("heads_0.5", "heads", 0.5)]
    original, step = lines["heads (heads)"].points[0], lines["heads (heads)"].points[2]
    assert (original.params, original.macs_per_second) == (heads["original"]["params"],
                                                           heads["original"]["macs_per_second"])
    assert (step.params, step.macs_per_second) == (heads["steps"][1]["params"],
                                                   heads["steps"][1]["macs_per_second"])
    assert [p.params for p in lines["heads (orphan)"].points] == [None, None]  # no compress.json: on no plot
    prune = lines["prune"].points[1]
    assert prune.sparse and prune.params == heads["original"]["params"] // 2
    assert [p.upstream for p in lines["ffn"].points] == ["melhubert_tiny", "ffn_0.5"]
    assert "gone" not in {p.upstream for p in compression_points(list(lines.values()))}


def test_section_table_and_figures(root: Path, bench: Path) -> None:
    page = write_report(bench).read_text()
    parsed = parse(page)
    assert '<section id="compression">' in page and "<h2>Compression</h2>" in page
    cells = grid(parsed.table("compression"))
    assert [r[0]["text"] for r in parsed.table("compression")[1:]] == [
        "melhubert_tiny", "heads_0.75", "heads_0.5", "ffn_0.5", "prune_0.5", "orphan"]
    for method in ("heads", "ffn"):
        report = json.loads((root / method / "compress.json").read_text())
        for step in report["steps"]:
            label = f"{method}_{step['keep']:g}"
            assert cells[label, "method"]["text"] == method
            assert cells[label, "keep"]["text"] == f"{step['keep']:g}"
            assert cells[label, "params (M)"]["text"] == f"{step['params'] / 1e6:.4g}"
            assert cells[label, "MMACs per audio second"]["text"] == f"{step['macs_per_second'] / 1e6:.4g}"
        assert cells["melhubert_tiny", "params (M)"]["text"] == f"{report['original']['params'] / 1e6:.4g}"
    assert cells["melhubert_tiny", "method"]["text"] == ORIGINAL
    assert cells["heads_0.5", "ks accuracy (%) ↑"]["text"] == f"{100 * (0.50 - 0.04):.2f}"
    assert cells["ffn_0.5", "sid accuracy (%) ↑"]["text"] == f"{100 * (0.20 - 0.02):.2f}"
    assert cells["orphan", "params (M)"]["text"] == "–"
    assert "dense" in cells["prune_0.5", "params (M)"]["title"]
    assert "trained" in cells["prune_0.5", "keep"]["title"]
    assert "does not speed up dense kernels" in page
    assert ("gone", "method") not in cells
    alts = [img["alt"] for img in parsed.images]
    assert alts[-2:] == ["metric against MACs per audio second", "metric against parameters"]
    from matplotlib.image import imread

    for img in parsed.images[-2:]:
        png = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"))
        pixels = imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05


def test_no_section_without_compress_steps(root: Path, tmp_path: Path) -> None:
    """Neither a benchmark of plain upstreams nor one whose step paths cannot be found has the section."""
    plain = _bench(tmp_path / "plain", {"fbank": "fbank", "melhubert_tiny": "melhubert_tiny"},
                   {"fbank": 0.3, "melhubert_tiny": 0.0})
    lost = _bench(tmp_path / "lost",  # the step's path is relative to the root fixture: not found from here
                  {"melhubert_tiny": "melhubert_tiny", "heads_0.5": "heads_0.5=heads/keep_0.5"},
                  {"melhubert_tiny": 0.0, "heads_0.5": 0.04})
    for folder in (plain, lost):
        assert load_inputs(folder).compression == []
        page = write_report(folder).read_text()
        assert 'id="compression"' not in page and "Compression" not in page

"""Structured pruning of heads and FFN units: exactness, smaller exports, falling cost, the command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from speechrep.cli import main
from speechrep.compress.structured import (
    ffn_singular_values,
    kept_heads,
    prune_ffn,
    prune_heads,
    step_report,
)
from speechrep.errors import ConfigError
from speechrep.upstream import export_upstream, load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["hubert_tiny", "melhubert_tiny", "wavlm_tiny"]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return load_upstream(name).eval()


def _outputs(model: nn.Module) -> list[torch.Tensor]:
    wavs = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(wavs, torch.tensor([8000, 5600])).hidden_states


def _pruners(name: str) -> list:
    return [prune_ffn] if name == "wavlm_tiny" else [prune_heads, prune_ffn]


@pytest.mark.parametrize("name", NAMES)
def test_keeping_everything_is_bit_exact(name: str) -> None:
    model = _model(name)
    reference = _outputs(model)
    for prune in _pruners(name):
        assert all(torch.equal(a, b) for a, b in zip(reference, _outputs(prune(model, 1.0))))


@pytest.mark.parametrize("name", ["hubert_tiny", "melhubert_tiny"])
def test_a_zero_head_is_pruned_first_and_changes_nothing(name: str) -> None:
    model = _model(name)
    attention = model.encoder.layers[1].attention
    rows = slice(attention.head_dim, 2 * attention.head_dim)  # head 1 of layer 1
    with torch.no_grad():
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            proj.weight[rows] = 0.0
            proj.bias[rows] = 0.0
        attention.out_proj.weight[:, rows] = 0.0
    pruned = prune_heads(model, 0.75)
    assert kept_heads(model, 0.75)[1] == [0] and pruned.config.num_heads == (2, 1)
    assert pruned.encoder.layers[1].attention.q_proj.weight.shape == (attention.head_dim, 32)
    for a, b in zip(_outputs(model), _outputs(pruned)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_zero_ffn_unit_is_pruned_first_and_changes_nothing() -> None:
    model = _model("hubert_tiny")
    with torch.no_grad():  # unit 5 of every layer writes nothing: its fc2 column is zero
        for layer in model.encoder.layers:
            layer.ffn.fc2.weight[:, 5] = 0.0
    pruned = prune_ffn(model, 63 / 64)
    assert pruned.config.ffn_size == (63, 63)
    for a, b in zip(_outputs(model), _outputs(pruned)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_export_loads_with_its_shapes_and_cost_falls_with_keep(name: str, tmp_path: Path) -> None:
    model = _model(name)
    for prune in _pruners(name):
        method = "heads" if prune is prune_heads else "ffn"
        costs = [step_report(model, method)]
        for keep in (0.75, 0.5, 0.25):
            pruned = prune(model, keep)
            loaded = load_upstream(export_upstream(pruned, tmp_path / f"{method}_{keep}", {"test": True}))
            assert all(torch.equal(a, b) for a, b in zip(_outputs(pruned), _outputs(loaded)))
            costs.append(step_report(loaded, method))
        assert [sum(c["heads" if method == "heads" else "ffn"]) for c in costs] == (
            [4, 3, 2, 1] if method == "heads" else [128, 96, 64, 32])
        for smaller, larger in zip(costs[1:], costs):
            assert smaller["params"] < larger["params"]
            assert smaller["macs_per_second"] < larger["macs_per_second"]


def test_pre_ln_layer_without_heads_and_pruning_twice_export_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny", layer_norm_first=True).eval()
    pruned = prune_ffn(prune_heads(model, 0.25), 0.5)  # one layer keeps no head: no attention, no norm
    assert sorted(pruned.config.num_heads) == [0, 1] and pruned.config.ffn_size == (32, 32)
    loaded = load_upstream(export_upstream(pruned, tmp_path / "pruned", {"test": True}))
    assert all(torch.equal(a, b) for a, b in zip(_outputs(pruned), _outputs(loaded)))


def test_wavlm_heads_and_models_without_a_transformer_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="relative position bias"):
        prune_heads(_model("wavlm_tiny"), 0.5)
    with pytest.raises(ConfigError, match="no transformer layers"):
        prune_ffn(_model("apc_tiny"), 0.5)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        prune_ffn(_model("hubert_tiny"), 0.0)


def test_singular_values_are_reported_per_layer() -> None:
    values = ffn_singular_values(_model("melhubert_tiny"))
    assert len(values) == 2 and values[0]["fc1"].shape == (32,) and values[0]["fc2"].shape == (32,)
    assert bool((values[0]["fc1"][:-1] >= values[0]["fc1"][1:]).all())


def test_command_exports_every_step_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "series"
    argv = ["compress", "--method", "ffn", "--upstream", "melhubert_tiny", "--out", str(out),
            "--keep", "0.5,0.25"]
    assert main(argv) == 0
    report = json.loads((out / "compress.json").read_text())
    assert [s["ffn"] for s in report["steps"]] == [[32, 32], [16, 16]]
    assert report["steps"][0]["params"] < report["original"]["params"]
    assert "rank_90" in report["steps"][0]["singular_values"][0]["fc1"]
    assert load_upstream(out / "keep_0.25").config.ffn_size == (16, 16)
    written = {p: p.stat().st_mtime_ns for p in out.glob("keep_*/model.safetensors")}
    assert main(argv) == 0  # resumes: nothing is exported again, the report is the same
    assert {p: p.stat().st_mtime_ns for p in out.glob("keep_*/model.safetensors")} == written
    assert json.loads((out / "compress.json").read_text()) == report
    assert report["steps_per_stage"] == 0  # one-shot: no training between the steps


@pytest.mark.parametrize("args", [
    ["--method", "heads", "--upstream", "wavlm_tiny"],
    ["--method", "heads", "--upstream", "apc_tiny"],
    ["--method", "ffn", "--upstream", "hubert_tiny", "--keep", "0.5,1.5"],
    ["--method", "ffn", "--upstream", "hubert_tiny", "--keep", "0"],
    ["--method", "ffn", "--upstream", "hubert_tiny", "--keep", "half"],
    ["--method", "distill", "--upstream", "hubert_tiny"],             # a student must be trained
    ["--method", "heads", "--upstream", "hubert_tiny", "steps=5"],    # retraining needs --data
    ["--method", "skip", "--upstream", "hubert_tiny"],                # diagonality needs --data
    ["--method", "heads", "--upstream", "hubert_tiny", "importance=size"],
])
def test_command_bad_inputs_exit_2(args: list[str], tmp_path: Path) -> None:
    try:
        code = main(["compress", *args, "--out", str(tmp_path / "out")])
    except SystemExit as stop:  # argparse's own errors (bad --method, unparsable --keep)
        code = stop.code
    assert code == 2
    assert not (tmp_path / "out").exists()

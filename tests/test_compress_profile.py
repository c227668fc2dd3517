"""The profiler's MAC counts against the analytic transformer formula, and the `speechrep profile` command."""
from __future__ import annotations

import json

import pytest
import torch

from speechrep.cli import main
from speechrep.compress.profile import count_macs, profile_upstream
from speechrep.nn.transformer import TransformerLayer
from speechrep.upstream import load_upstream


def test_transformer_macs_match_the_analytic_formula() -> None:
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny").eval()
    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    samples = 16000
    by_kind, by_layer, frames = count_macs(model, torch.randn(1, samples), torch.tensor([samples]))
    d = layers[0].attention.q_proj.in_features
    f = layers[0].ffn.fc1.out_features
    n, t = len(layers), frames
    assert by_kind["attention projections"] == n * 4 * t * d * d  # q, k, v, out
    assert by_kind["attention products"] == n * 2 * t * t * d  # QKᵀ and the weighted sum of values
    assert by_kind["feed-forward"] == n * 2 * t * d * f
    assert by_layer == [4 * t * d * d + 2 * t * t * d + 2 * t * d * f] * n
    assert by_kind["front end"] > 0 and by_kind["positional conv"] > 0


def test_attention_grows_quadratically_and_parameters_add_up() -> None:
    model = load_upstream("hubert_tiny")
    report = profile_upstream(model, [2.0, 1.0], repeats=1)
    short, long = report.lengths  # sorted by length
    assert (short.seconds, long.seconds) == (1.0, 2.0)
    assert report.params == sum(p.numel() for p in model.parameters())
    ratio = long.macs_by_kind["attention products"] / short.macs_by_kind["attention products"]
    assert ratio == pytest.approx((long.frames / short.frames) ** 2, rel=1e-12)
    assert long.macs == sum(long.macs_by_kind.values()) and long.wall_time_s > 0 and long.peak_memory_mib > 0


def test_profile_command_prints_a_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "hubert_tiny", "--seconds", "0.5", "1", "--repeats", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "attention products" in table and "GMACs per audio second" in table
    data = json.loads(out.read_text())
    assert [row["seconds"] for row in data["lengths"]] == [0.5, 1.0]
    assert main(["profile", "hubert_tiny", "--seconds", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err

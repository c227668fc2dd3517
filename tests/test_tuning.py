"""Tuning strategies (frozen, full) and the benchmark's typed config and output-folder guarantees."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import speechrep.downstream.runner as runner
from speechrep.cli import main
from speechrep.config import apply_override, load_config, parse_yaml
from speechrep.downstream.features import DownstreamModel, FeatureBatch, FeatureEncoder
from speechrep.downstream.tasks import get_task, list_tasks
from speechrep.errors import ConfigError
from speechrep.storage import OutputError, OutputLock
from speechrep.tuning import get_tuning, list_tunings
from speechrep.upstream import export_upstream, load_upstream

TWO_STEPS = ["train.max_steps=2", "train.eval_every=2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _config(corpus: Path, out: Path, **options: Any) -> runner.BenchmarkConfig:
    options = {"preset": "tiny", "overrides": list(TWO_STEPS), **options}
    return runner.BenchmarkConfig(["fbank_global"], ["ks"], corpus, out, **options)


def _batch() -> FeatureBatch:
    gen = torch.Generator().manual_seed(0)
    return FeatureBatch(cuts=None, wavs=0.1 * torch.randn(2, 6400, generator=gen),
                        wav_lens=torch.tensor([6400, 4800]))


# ------------------------------------------------------------------------------------------------ strategies

def test_registry_names_the_strategies_and_rejects_unknown_ones() -> None:
    assert list_tunings() == ["adapterbias", "bitfit", "frozen", "full", "houlsby", "houlsby_parallel", "lora",
                              "prefix", "prompt"]
    assert get_tuning("frozen").caches_features and not get_tuning("full").caches_features
    with pytest.raises(ConfigError,
                       match="--tuning 'prefixes': unknown tuning strategy; choose from adapterbias, ") as info:
        get_tuning("prefixes")
    assert "\n" not in str(info.value)


def test_frozen_upstream_gets_no_gradient_no_checkpoint_and_stays_in_eval() -> None:
    torch.manual_seed(0)
    upstream = load_upstream("hubert_tiny")
    before = {k: v.clone() for k, v in upstream.state_dict().items()}
    frozen = get_tuning("frozen")
    encoder = FeatureEncoder(upstream, frozen, layers=None)
    model = DownstreamModel(encoder, torch.nn.Linear(upstream.hidden_sizes[-1], 2)).train()
    assert not upstream.training and not encoder.upstream.upstream.training
    assert set(model.state_dict()) == {"encoder.featurizer.weights", "encoder._extra_state", "head.weight",
                                       "head.bias"}
    assert frozen.checkpoint_keys(encoder.upstream) == [] and frozen.parameter_groups(encoder.upstream, None) == []
    assert runner.optimizer_groups(model, get_task("ks").config()) is None  # nothing beyond the defaults
    features, _ = encoder(_batch())
    model.head(features).sum().backward()
    assert encoder.featurizer.weights.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in upstream.parameters())
    # .to() moves the held upstream although it is not a submodule
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in upstream.parameters())
    model.to(torch.float32)
    for name, value in upstream.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_full_tuning_trains_and_saves_the_whole_upstream() -> None:
    torch.manual_seed(0)
    upstream = load_upstream("hubert_tiny")
    full = get_tuning("full")
    encoder = FeatureEncoder(upstream, full, layers=None)
    model = DownstreamModel(encoder, torch.nn.Linear(upstream.hidden_sizes[-1], 2)).train()
    assert encoder.upstream is upstream and upstream.training
    upstream_keys = [k for k in model.state_dict() if k.startswith("encoder.upstream.")]
    assert upstream_keys == [f"encoder.upstream.{k}" for k in full.checkpoint_keys(encoder.upstream)]
    assert len(upstream_keys) == len(upstream.state_dict())
    cfg = replace(get_task("ks").config(), upstream_lr=1e-3, layer_weights_lr=0.1)
    groups = runner.optimizer_groups(model, cfg)
    # the head (and anything else), then the upstream at upstream_lr, then the layer weights: the old order
    assert [g.get("lr") for g in groups] == [None, 1e-3, 0.1]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in upstream.parameters()]
    features, _ = encoder(_batch())
    model.head(features).sum().backward()
    # every weight of the forward pass gets a gradient (the mask embedding is used only in pre-training)
    missing = [n for n, p in upstream.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert all(p.requires_grad for p in upstream.parameters()) and missing == ["mask_emb"], missing


class _BiasOnly:
    """A strategy of the kind issue 13 adds (BitFit-like): trains and saves only the upstream's biases."""

    name = "bias_only"
    caches_features = False

    def prepare(self, upstream: torch.nn.Module) -> torch.nn.Module:
        for name, p in upstream.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
        return upstream

    def parameter_groups(self, prepared: torch.nn.Module, cfg: Any) -> list[dict[str, Any]]:
        return [{"params": [p for p in prepared.parameters() if p.requires_grad], "lr": cfg.upstream_lr}]

    def checkpoint_keys(self, prepared: torch.nn.Module) -> list[str]:
        return [name for name, p in prepared.named_parameters() if p.requires_grad]


def test_a_strategy_that_trains_part_of_the_upstream_fits_the_runner(corpus: Path, tmp_path: Path) -> None:
    choice = runner.parse_upstream("hubert_tiny@random")
    source = runner.FeatureSource(choice.label, runner.load_upstream_module(choice))
    row = runner.run_pair("ks", choice, source, corpus, tmp_path, tuning=_BiasOnly(), preset="tiny",
                          overrides=[*TWO_STEPS, "upstream_lr=1e-2"])
    assert row["tuning"] == "bias_only" and row["upstream_lr"] == 1e-2
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    saved = [k.removeprefix("encoder.upstream.") for k in state["model"] if k.startswith("encoder.upstream.")]
    assert saved and all(k.endswith(".bias") for k in saved)
    # the saved biases moved, and the checkpoint loads strictly into a fresh model (other weights as built)
    fresh = runner.load_upstream_module(choice)
    assert any(not torch.equal(state["model"][f"encoder.upstream.{k}"], fresh.state_dict()[k]) for k in saved)
    parts = get_task("ks").build(runner.load_task_config(get_task("ks"), "tiny"), corpus, source)
    model = DownstreamModel(FeatureEncoder(fresh, _BiasOnly(), None), parts.head)
    model.load_state_dict(state["model"])  # strict: the unsaved upstream weights are not missing keys
    assert all(torch.equal(fresh.state_dict()[k], state["model"][f"encoder.upstream.{k}"]) for k in saved)


def test_finetune_flag_is_an_alias_of_tuning_full(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["benchmark", "--upstream", "hubert_tiny", "--tasks", "ks", "--corpus", str(corpus), "--out", str(out),
            "--preset", "tiny", *TWO_STEPS]
    assert main([*argv, "--finetune"]) == 0
    row = json.loads((out / "hubert_tiny" / "ks" / "results.json").read_text())
    assert row["tuning"] == "full" and row["upstream_lr"] is not None
    assert runner.load_config(runner.BenchmarkConfig, out / "config.yaml").tuning == "full"
    assert main([*argv, "--tuning", "full"]) == 0  # the same settings: resumes, nothing to do
    capsys.readouterr()
    assert main([*argv, "--finetune", "--tuning", "frozen"]) == 2
    assert "--finetune" in capsys.readouterr().err
    assert main([*argv, "--tuning", "prefixes"]) == 2
    assert "unknown tuning strategy" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the config

def test_config_yaml_is_written_and_reloads_to_the_same_config(corpus: Path, tmp_path: Path) -> None:
    cfg = _config(corpus, tmp_path / "out", lr_sweep=[1e-2, 1e-3], feature_cache=False)
    runner.benchmark(cfg)
    again = load_config(runner.BenchmarkConfig, tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert runner.benchmark(replace(again, overwrite=True))  # overwrite is an action, never saved
    assert load_config(runner.BenchmarkConfig, tmp_path / "out" / "config.yaml").overwrite is False


def _old_flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    """The former preset mechanism (a nested mapping as `a.b=value` overrides), kept as the reference."""
    items = []
    for key, value in data.items():
        if isinstance(value, dict):
            items += _old_flatten(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={value if isinstance(value, str) else json.dumps(value)}")
    return items


@pytest.mark.parametrize("preset", ["tiny", "small", "demo"])
def test_preset_files_layer_exactly_as_the_old_flattening(preset: str) -> None:
    compared = 0
    for task in list_tasks():
        spec = get_task(task)
        preset_file = runner.CONFIG_DIR / preset / f"{task}.yaml"
        if not preset_file.is_file():
            continue
        base = runner.CONFIG_DIR / f"{task}.yaml"
        old = load_config(spec.config, base if base.is_file() else None)
        for item in _old_flatten(parse_yaml(preset_file.read_text()) or {}):
            old = apply_override(old, item)
        assert runner.load_task_config(spec, preset) == old, preset_file
        compared += 1
    assert compared >= 6


# ------------------------------------------------------------------------------------------ the out folder

def test_a_second_benchmark_on_the_same_out_is_refused(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out, "another speechrep benchmark"):
        with pytest.raises(OutputError, match="in use by another speechrep benchmark"):
            runner.benchmark(_config(corpus, out))
    assert not (out / "fbank_global").exists()
    assert runner.benchmark(_config(corpus, out))  # free again once the holder is gone


def test_changed_settings_are_refused_and_overwrite_starts_over(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = runner.benchmark(_config(corpus, out))[0]
    metrics = (out / "fbank_global" / "ks" / "metrics.jsonl").read_text()
    # Adding an upstream or a task to the folder is fine: rows are per pair.
    assert len(runner.benchmark(replace(_config(corpus, out), upstreams=["fbank_global", "fbank"]))) == 2
    changed = _config(corpus, out, overrides=["train.max_steps=3", "train.eval_every=3"])
    with pytest.raises(OutputError, match="overrides:.*use --overwrite") as info:
        runner.benchmark(changed)
    assert "\n" not in str(info.value)
    for other in (_config(corpus, out, preset=None, overrides=[]), _config(corpus, out, tuning="full"),
                  _config(corpus, out, lr_sweep=[1e-2, 1e-3])):
        with pytest.raises(OutputError, match="other settings"):
            runner.benchmark(other)
    assert (out / "fbank_global" / "ks" / "metrics.jsonl").read_text() == metrics
    row = runner.benchmark(replace(changed, overwrite=True))[0]
    assert row["sub_runs"]["main"]["steps"] == 3 and first["sub_runs"]["main"]["steps"] == 2
    assert not (out / "fbank").exists()  # started over: nothing of the old runs is left
    assert runner.benchmark(changed)[0] == row  # the new settings now resume


def test_a_retrained_upstream_never_reuses_stale_rows(corpus: Path, tmp_path: Path) -> None:
    export = tmp_path / "run" / "upstream"
    export_upstream(load_upstream("hubert_tiny"), export, {"note": "first"})
    cfg = replace(_config(corpus, tmp_path / "out"), upstreams=[str(export)])
    row = runner.benchmark(cfg)[0]
    assert row["upstream_weights"] and runner.benchmark(cfg)[0] == row
    retrained = load_upstream("hubert_tiny")
    runner.reinitialise(retrained, seed=1)
    export_upstream(retrained, export, {"note": "retrained"})
    with pytest.raises(OutputError, match=r"run[/\\]ks: made with other settings \(upstream_weights"):
        runner.benchmark(cfg)
    assert runner.benchmark(replace(cfg, overwrite=True))[0]["upstream_weights"] != row["upstream_weights"]


def test_bad_tasks_and_overrides_are_one_line_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    base = ["benchmark", "--upstream", "fbank", "--corpus", str(corpus), "--out", str(tmp_path / "o"),
            "--preset", "tiny"]
    assert main([*base, "--tasks", ""]) == 2
    assert "--tasks" in capsys.readouterr().err
    assert main([*base, "--tasks", " , "]) == 2
    assert "--tasks" in capsys.readouterr().err
    assert main([*base, "--tasks", "ks", "pr.train.lr=0.5"]) == 2  # pr is not run: would be ignored
    assert "task 'pr' is not in --tasks" in capsys.readouterr().err
    assert main([*base, "--tasks", "ks", "no_such_key=1"]) == 2
    assert "unknown key 'no_such_key'" in capsys.readouterr().err
    assert main([*base, "--tasks", "ks", "ks.no_such_key=1"]) == 2
    assert "unknown key 'no_such_key'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was written before the errors


def test_a_frozen_upstream_keeps_the_upstream_contract() -> None:
    from speechrep.tuning.frozen import FrozenUpstream
    from speechrep.upstream import load_upstream
    from speechrep.upstream.chunking import frame_geometry

    upstream = load_upstream("hubert_tiny")
    frozen = FrozenUpstream(upstream)
    assert frame_geometry(frozen) == upstream.frame_geometry
    assert (frozen.stride, frozen.hidden_sizes) == (upstream.stride, list(upstream.hidden_sizes))

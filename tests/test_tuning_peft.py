"""Parameter-efficient tuning strategies (issue 13): bitfit, houlsby, houlsby_parallel, adapterbias, lora (prefix and
prompt, which change the output from the start, have their own tests in test_tuning_prompts.py; here they join the
run_pair and GRU-error tests)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import speechrep.downstream.runner as runner
from speechrep.cli import main
from speechrep.downstream.features import DownstreamModel, FeatureBatch, FeatureEncoder
from speechrep.errors import ConfigError
from speechrep.tuning import get_tuning
from speechrep.tuning.lora import LoRAOptions, merge, merged_upstream, unmerge
from speechrep.upstream import export_upstream, load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STRATEGIES = ["bitfit", "houlsby", "houlsby_parallel", "adapterbias", "lora"]
ALL_STRATEGIES = [*STRATEGIES, "prefix", "prompt"]
UPSTREAMS = ["hubert_tiny", "melhubert_tiny", "tera_tiny"]  # tera: the Mockingjay family's own layers
# what each strategy trains, by the last parts of the parameter names
TRAINED = {
    "bitfit": lambda name: name.endswith(".bias"),
    "houlsby": lambda name: ".adapter." in name,
    "houlsby_parallel": lambda name: ".adapter." in name,
    "adapterbias": lambda name: name.endswith((".alpha.weight", ".alpha.bias", ".vector")),
    "lora": lambda name: name.endswith((".lora_a", ".lora_b")) and any(f".{p}." in name
                                                                        for p in ("q_proj", "v_proj", "qkv")),
    "prefix": lambda name: name.endswith((".prefix_key", ".prefix_value")),
    "prompt": lambda name: name.endswith(".prompts"),
}


def _batch() -> FeatureBatch:
    gen = torch.Generator().manual_seed(0)
    return FeatureBatch(cuts=None, wavs=0.1 * torch.randn(2, 6400, generator=gen),
                        wav_lens=torch.tensor([6400, 4800]))


def _model(upstream_name: str, strategy: str, seed: int = 0) -> tuple[torch.nn.Module, DownstreamModel]:
    """A fresh upstream (the same weights for the same seed) and a downstream model tuning it."""
    torch.manual_seed(seed)
    upstream = load_upstream(upstream_name)
    torch.manual_seed(seed + 1)
    encoder = FeatureEncoder(upstream, get_tuning(strategy), layers=None)
    return upstream, DownstreamModel(encoder, torch.nn.Linear(upstream.hidden_sizes[-1], 2))


def _states(model: DownstreamModel) -> list[torch.Tensor]:
    with torch.no_grad():
        return run_states(model.encoder.upstream)


def run_states(prepared: torch.nn.Module) -> list[torch.Tensor]:
    batch = _batch()
    return list(prepared(batch.wavs, batch.wav_lens).hidden_states)


@pytest.mark.parametrize("upstream_name", UPSTREAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_starts_at_the_frozen_model_and_trains_only_its_parameters(
        strategy: str, upstream_name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = load_upstream(upstream_name).eval()
    with torch.no_grad():
        frozen_states = run_states(reference)
    upstream, model = _model(upstream_name, strategy)
    model.train()
    prepared = model.encoder.upstream
    assert not upstream.training  # the frozen weights' dropout stays off while the model trains
    for ours, theirs in zip(_states(model), frozen_states, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # zero-initialised: exactly the frozen model

    trained = {name for name, p in prepared.named_parameters() if p.requires_grad}
    assert trained and trained == {name for name, _ in prepared.named_parameters() if TRAINED[strategy](name)}
    assert sorted(get_tuning(strategy).checkpoint_keys(prepared)) == sorted(trained)
    before = {name: p.detach().clone() for name, p in prepared.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features, _ = model.encoder(_batch())
    model.head(features).pow(2).sum().backward()
    optimizer.step()
    # every declared parameter got a gradient (after one step: zero-initialised B/up of LoRA/adapters only have
    # a gradient once A/down is non-zero, which it is), and nothing frozen moved
    moved = {name for name, p in prepared.named_parameters() if not torch.equal(p, before[name])}
    assert moved <= trained
    assert all(p.grad is None for name, p in prepared.named_parameters() if name not in trained)
    zero_start = {"houlsby": ".down.", "houlsby_parallel": ".down.", "adapterbias": ".alpha.", "lora": ".lora_a"}
    # what multiplies a zero-initialised factor gets no gradient on the first step; the rest all moved
    expected = {n for n in trained if strategy == "bitfit" or zero_start[strategy] not in n}
    assert expected <= moved, sorted(expected - moved)

    # the checkpoint holds exactly the trained upstream parameters (plus the head and layer weights)
    state = model.state_dict()
    upstream_keys = {k.removeprefix("encoder.upstream.") for k in state if k.startswith("encoder.upstream.")}
    assert upstream_keys == trained
    assert set(state) - {f"encoder.upstream.{k}" for k in trained} == {
        "encoder.featurizer.weights", "encoder._extra_state", "head.weight", "head.bias"}
    torch.save(state, tmp_path / "model.pt")
    with torch.no_grad():
        tuned = _states(model)
    assert any(not torch.equal(a, b) for a, b in zip(tuned, frozen_states))
    _, fresh = _model(upstream_name, strategy)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # strict
    for ours, theirs in zip(_states(fresh), tuned, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("upstream_name", ["hubert_tiny", "tera_tiny"])
def test_lora_merges_unmerges_and_exports_as_a_plain_upstream(upstream_name: str, tmp_path: Path) -> None:
    upstream, model = _model(upstream_name, "lora")
    prepared = model.encoder.upstream
    with torch.no_grad():  # a trained-looking update: B away from zero
        for name, p in prepared.named_parameters():
            if name.endswith(".lora_b"):
                p.normal_(0, 0.05)
        tuned = _states(model)
        merge(prepared)
        for ours, theirs in zip(_states(model), tuned, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        unmerge(prepared)
        for ours, theirs in zip(_states(model), tuned, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    plain = merged_upstream(prepared)
    assert not any("lora" in k for k in plain.state_dict())
    assert set(plain.state_dict()) == set(load_upstream(upstream_name).state_dict())
    export_upstream(plain, tmp_path / "merged", {"note": "lora merged"})
    loaded = load_upstream(tmp_path / "merged").eval()
    with torch.no_grad():
        for ours, theirs in zip(run_states(loaded), tuned, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_options_parse_and_bad_ones_are_one_line_errors() -> None:
    lora = get_tuning("lora")
    assert lora.options == LoRAOptions() == LoRAOptions(rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
    custom = get_tuning("lora:rank=4,alpha=8,targets=q_proj/k_proj")
    assert custom.options == LoRAOptions(rank=4, alpha=8.0, targets=("q_proj", "k_proj"))
    assert custom.name == "lora:rank=4,alpha=8,targets=q_proj/k_proj" and get_tuning("lora").name == "lora"
    assert get_tuning("houlsby:bottleneck=16").options.bottleneck == 16
    prepared = custom.prepare(load_upstream("hubert_tiny"))
    shapes = {n: tuple(p.shape) for n, p in prepared.named_parameters() if p.requires_grad}
    assert shapes and all(".q_proj." in n or ".k_proj." in n for n in shapes)
    assert all(4 in s for s in shapes.values())
    for name, message in [("lora:rnk=4", "unknown option 'rnk=4'"), ("lora:rank=x", "rank='x' is not a int"),
                          ("frozen:rank=4", "frozen takes no options"),
                          ("lora:targets=fc1", "targets must be among")]:
        with pytest.raises(ConfigError, match=message) as info:
            get_tuning(name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_an_upstream_without_transformer_layers_is_a_one_line_error(strategy: str) -> None:
    with pytest.raises(ConfigError, match=f"--tuning {strategy}: APC has no transformer layers; on it use "
                                          "frozen or full") as info:
        get_tuning(strategy).prepare(load_upstream("apc_tiny"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_run_pair_trains_and_evaluates_and_its_checkpoint_reloads(strategy: str, corpus: Path,
                                                                  tmp_path: Path) -> None:
    choice = runner.parse_upstream("hubert_tiny@random")
    source = runner.FeatureSource(choice.label, runner.load_upstream_module(choice))
    row = runner.run_pair("ks", choice, source, corpus, tmp_path, tuning=get_tuning(strategy), preset="tiny",
                          overrides=["train.max_steps=3", "train.eval_every=3"])
    assert row["tuning"] == strategy and row["test"] is not None
    # the row counts the upstream as it was loaded, not with the inserted modules, and the inserted modules
    # train at the task's lr, not at upstream_lr
    assert row["params"]["upstream"] == sum(p.numel() for p in runner.load_upstream_module(choice).parameters())
    assert row["upstream_lr"] is None
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    saved = {k for k in state if k.startswith("encoder.upstream.")}
    assert saved and all(TRAINED[strategy](k) for k in saved)
    # the saved parameters moved (the zero-initialised ones too): the saved model is no longer the frozen one
    fresh = get_tuning(strategy).prepare(runner.load_upstream_module(choice)).state_dict()
    assert all(not torch.equal(state[k], fresh[k.removeprefix("encoder.upstream.")]) for k in saved
               if not k.endswith((".down.weight", ".down.bias", ".alpha.weight", ".alpha.bias", ".lora_a")))


def test_benchmark_cli_runs_a_peft_strategy_with_options(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["benchmark", "--upstream", "melhubert_tiny", "--tasks", "ks", "--corpus", str(corpus), "--out",
            str(out), "--preset", "tiny", "train.max_steps=2", "train.eval_every=2",
            "--tuning", "lora:rank=2,targets=q_proj"]
    assert main(argv) == 0
    row = json.loads((out / "melhubert_tiny" / "ks" / "results.json").read_text())
    assert row["tuning"] == "lora:rank=2,targets=q_proj" and row["test"] is not None
    state = torch.load(out / "melhubert_tiny" / "ks" / "checkpoints" / "best.pt", weights_only=True)["model"]
    saved = {k: tuple(v.shape) for k, v in state.items() if k.startswith("encoder.upstream.")}
    assert saved and all(".q_proj.lora_" in k and 2 in shape for k, shape in saved.items())
    capsys.readouterr()
    assert main([*argv[:-1], "lora:rank=2,nope=1"]) == 2
    assert "--tuning lora:rank=2,nope=1: unknown option 'nope=1'" in capsys.readouterr().err

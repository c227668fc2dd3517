"""Tuned benchmark runs (issue 13): what a row records, low-resource training shares, checkpoints that know
their base upstream, `tuning.key=value` options, `speechrep merge-lora`, every strategy on every transformer
upstream of the hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import speechrep.downstream.runner as runner
from speechrep.bench.report.inputs import load_inputs, pair_run_dirs
from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import DownstreamModel
from speechrep.errors import CheckpointError, ConfigError
from speechrep.train import load_checkpoint
from speechrep.tuning import get_tuning, with_options
from speechrep.upstream import load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = ["train.max_steps=3", "train.eval_every=3"]


def _bench(corpus: Path, out: Path, tuning: str = "frozen", *items: str) -> list[str]:
    """`speechrep benchmark --tuning TUNING` of hubert_tiny on the tiny KS for 3 steps, with `items`."""
    return ["benchmark", "--upstream", "hubert_tiny", "--tasks", "ks", "--corpus", str(corpus),
            "--out", str(out), "--preset", "tiny", "--tuning", tuning, *STEPS, *items]


def test_training_share_is_a_seeded_subset_in_the_original_order(corpus: Path) -> None:
    cuts = load_cuts(corpus, "ks", "train")
    ids = [c.id for c in cuts]
    half = [c.id for c in runner.training_share(cuts, 0.5, seed=0)]
    assert len(half) == round(0.5 * len(ids)) and half == [i for i in ids if i in set(half)]
    assert half == [c.id for c in runner.training_share(cuts, 0.5, seed=0)]
    assert half != [c.id for c in runner.training_share(cuts, 0.5, seed=1)]
    assert len(runner.training_share(cuts, 1e-6, seed=0)) == 1  # never empty
    with pytest.raises(ConfigError, match=r"ks: train_fraction=1.5: expected a share in \(0, 1\]"):
        runner.load_task_config(runner.get_task("ks"), "tiny", ["train_fraction=1.5"])


def test_a_row_records_its_training_share_tuned_parameters_and_checkpoint_size(corpus: Path,
                                                                              tmp_path: Path) -> None:
    choice = runner.parse_upstream("hubert_tiny@random")
    source = runner.FeatureSource(choice.label, runner.load_upstream_module(choice))
    full = len(load_cuts(corpus, "ks", "train"))
    row = runner.run_pair("ks", choice, source, corpus, tmp_path, tuning=get_tuning("lora:rank=2"),
                          preset="tiny", overrides=[*STEPS, "train_fraction=0.3"])
    assert row["train_cuts"] == round(0.3 * full)
    upstream = runner.load_upstream_module(choice)
    layers = sum(1 for m in upstream.modules() if type(m).__name__ == "SelfAttention")
    width = upstream.hidden_sizes[-1]
    assert row["params"]["tuned"] == layers * 2 * 2 * (width + width)  # q and v: rank 2 × (in + out)
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    assert row["params"]["checkpoint_bytes"] == sum(t.numel() * t.element_size() for t in tensors)
    assert state["encoder._extra_state"] == {"base_upstream": runner.upstream_fingerprint(upstream),
                                             "tuning": "lora:rank=2"}


def test_a_checkpoint_loaded_onto_another_upstream_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    choice = runner.parse_upstream("hubert_tiny@random")
    source = runner.FeatureSource(choice.label, runner.load_upstream_module(choice))
    runner.run_pair("ks", choice, source, corpus, tmp_path, tuning=get_tuning("houlsby"), preset="tiny",
                    overrides=STEPS)
    spec = runner.get_task("ks")

    def model_on(upstream: torch.nn.Module) -> DownstreamModel:
        features = runner.FeatureSource("x", upstream)
        head = spec.build(runner.load_task_config(spec, "tiny"), corpus, features).head
        return DownstreamModel(features.encoder(get_tuning("houlsby"), None), head)

    load_checkpoint(tmp_path / "checkpoints" / "best.pt", model_on(runner.load_upstream_module(choice)))
    torch.manual_seed(123)
    other = model_on(load_upstream("hubert_tiny"))  # the same architecture with other weights
    message = "checkpoint trained on upstream weights .*; this model's upstream has weights"
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tmp_path / "checkpoints" / "best.pt", other)
    assert "\n" not in str(info.value)


def test_tuning_options_come_from_overrides_too() -> None:
    assert with_options("lora", ["tuning.rank=4", "train.lr=1e-3"]) == ("lora:rank=4", ["train.lr=1e-3"])
    assert with_options("lora:alpha=2", ["tuning.rank=4"]) == ("lora:alpha=2,rank=4", [])
    assert with_options("houlsby", ["ks.train.lr=1"]) == ("houlsby", ["ks.train.lr=1"])


def test_merge_lora_exports_the_tuned_upstream_and_refuses_other_runs(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(_bench(corpus, out, "lora", "tuning.rank=2", "tuning.alpha=4")) == 0
    printed = capsys.readouterr().out
    assert "| tuning | tuned params | share | checkpoint |" in printed and "lora:rank=2,alpha=4" in printed
    checkpoint = out / "hubert_tiny" / "ks" / "checkpoints" / "best.pt"
    assert main(["merge-lora", "--upstream", "hubert_tiny", "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "merged")]) == 0
    # the merged upstream computes what the tuned one computes
    choice = runner.parse_upstream("hubert_tiny")
    tuned = runner.FeatureSource("x", runner.load_upstream_module(choice)).encoder(
        get_tuning("lora:rank=2,alpha=4"), None)
    state = torch.load(checkpoint, weights_only=True)["model"]
    tuned.upstream.load_state_dict({k.removeprefix("encoder.upstream."): v for k, v in state.items()
                                    if k.startswith("encoder.upstream.")}, strict=False)
    merged = load_upstream(tmp_path / "merged").eval()
    wavs = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([8000, 6000])
    with torch.no_grad():
        for ours, theirs in zip(merged(wavs, lens).hidden_states, tuned.upstream(wavs, lens).hidden_states,
                                strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # onto other weights: exit 1 with one line; a run tuned otherwise: exit 2
    capsys.readouterr()
    assert main(["merge-lora", "--upstream", "hubert_tiny@random", "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "m2")]) == 1
    assert "trained on upstream weights" in capsys.readouterr().err
    other = tmp_path / "houlsby"
    assert main(_bench(corpus, other, "houlsby")) == 0
    capsys.readouterr()
    assert main(["merge-lora", "--upstream", "hubert_tiny", "--out", str(tmp_path / "m3"), "--checkpoint",
                 str(other / "hubert_tiny" / "ks" / "checkpoints" / "best.pt")]) == 2
    assert "tuned with houlsby; only a LoRA update merges" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


def test_a_frozen_leaderboard_has_no_tuning_columns(corpus: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_bench(corpus, tmp_path / "frozen")) == 0
    assert "tuned params" not in capsys.readouterr().out
    row = json.loads((tmp_path / "frozen" / "hubert_tiny" / "ks" / "results.json").read_text())
    assert row["params"]["tuned"] == 0 and row["params"]["checkpoint_bytes"] > 0


def test_the_report_joins_benchmarks_of_several_strategies(corpus: Path, tmp_path: Path) -> None:
    for strategy in ("frozen", "houlsby", "lora:rank=2"):
        assert main(_bench(corpus, tmp_path / strategy.split(":")[0], strategy)) == 0
    page = tmp_path / "tuning.html"
    assert main(["report", str(tmp_path / "frozen"), str(tmp_path / "houlsby"), str(tmp_path / "lora"),
                 "--out", str(page)]) == 0
    html = page.read_text()
    section = html[html.index('<section id="tuning">'):html.index('<section id="settings">')]
    for label in ("hubert_tiny [frozen]", "hubert_tiny [houlsby]", "hubert_tiny [lora:rank=2]"):
        assert f'<td class="name">{label}</td>' in section
    assert "<img" in section  # the metric-against-parameters plot
    lora = json.loads((tmp_path / "lora" / "hubert_tiny" / "ks" / "results.json").read_text())
    assert f"<td>{lora['params']['tuned']:,}</td>" in section
    # each row's learning curve and configs come from its own folder
    inputs = load_inputs(tmp_path / "frozen", [tmp_path / "houlsby", tmp_path / "lora"])
    row = next(r for r in inputs.rows if r["upstream"] == "hubert_tiny [lora:rank=2]")
    assert pair_run_dirs(inputs.bench_dir, row) == [tmp_path / "lora" / "hubert_tiny" / "ks"]
    assert main(["report", str(tmp_path / "frozen"), str(tmp_path / "frozen"), "--out", str(page)]) == 2


TRANSFORMER_TINY = ["wav2vec2_tiny", "wav2vec2_tiny_ln_first", "hubert_tiny", "wavlm_tiny", "data2vec_tiny",
                    "distilhubert_tiny", "melhubert_tiny", "best_rq_tiny", "mockingjay_tiny", "tera_tiny",
                    "audio_albert_tiny"]
RECURRENT_TINY = ["apc_tiny", "vq_apc_tiny", "npc_tiny", "cpc_tiny"]
PEFT = ["bitfit", "houlsby", "houlsby_parallel", "adapterbias", "lora", "prefix", "prompt",
        "prompt:deep=true"]


@pytest.mark.parametrize("upstream_name", TRANSFORMER_TINY)
def test_every_strategy_runs_on_every_transformer_upstream_of_the_hub(upstream_name: str) -> None:
    wavs = 0.1 * torch.randn(2, 9600, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([9600, 7000])
    torch.manual_seed(0)
    frozen = load_upstream(upstream_name).eval()
    with torch.no_grad():
        reference = frozen(wavs, lens)
    for strategy in PEFT:
        torch.manual_seed(0)
        prepared = get_tuning(strategy).prepare(load_upstream(upstream_name))
        out = prepared(wavs, lens)
        assert torch.equal(out.lengths, reference.lengths), strategy
        assert [h.shape for h in out.hidden_states] == [h.shape for h in reference.hidden_states], strategy
        trained = {name: p for name, p in prepared.named_parameters() if p.requires_grad}
        assert trained, strategy
        sum(h.square().mean() for h in out.hidden_states).backward()
        # a pre-LN encoder's final norm feeds only `final`, not the hidden states: BitFit's one idle bias
        idle = {name for name, p in trained.items() if p.grad is None}
        assert idle <= {"upstream.encoder.norm.bias"}, (strategy, idle)


@pytest.mark.parametrize("upstream_name", RECURRENT_TINY)
def test_strategies_that_need_a_transformer_name_the_ones_that_apply(upstream_name: str) -> None:
    for strategy in PEFT:
        with pytest.raises(ConfigError, match="no transformer layers; on it use frozen or full") as info:
            get_tuning(strategy).prepare(load_upstream(upstream_name))
        assert "\n" not in str(info.value)

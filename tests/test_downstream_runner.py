"""The SUPERB runner end to end on a tiny tone corpus: CLI, resume, test isolation, feature cache parity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from downstream_corpus import make_corpus

import speechrep.downstream.runner as runner
from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import ks as ks_task

FAST = ["train.max_steps=30", "train.eval_every=15"]


def _bench(upstreams: list[str], tasks: list[str], corpus: Path, out: Path, **options) -> list[dict]:
    """runner.benchmark on a BenchmarkConfig built from the loose arguments."""
    return runner.benchmark(runner.BenchmarkConfig(upstreams, tasks, corpus, out, **options))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_cli_benchmark_trains_scores_and_resumes(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    argv = ["benchmark", "--upstream", "fbank", "--upstream", "fbank_global", "--upstream", "hubert_tiny",
            "--tasks", "ks", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny", *FAST]
    assert main(argv) == 0
    table = capsys.readouterr().out
    rows = {r["upstream"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"fbank", "fbank_global", "hubert_tiny"}
    # Per-utterance CMVN pools to a constant vector: SUPERB's fbank is at chance on 4 balanced keywords,
    # while corpus-level statistics keep the keyword information.
    assert rows["fbank"]["test"]["accuracy"] == pytest.approx(0.25)
    assert rows["fbank_global"]["test"]["accuracy"] >= 0.9
    hubert = rows["hubert_tiny"]
    assert len(hubert["layer_weights"]) == 3 and sum(hubert["layer_weights"]) == pytest.approx(1.0, abs=1e-4)
    assert hubert["params"]["upstream"] > 0 and 0 < hubert["params"]["trainable"] < 10_000
    assert {"dev", "test", "wall_time_s", "lr", "sub_runs"} <= set(hubert)
    assert hubert["sub_runs"]["main"]["steps"] == 30 and hubert["sub_runs"]["main"]["best_step"] in (15, 30)
    scores = json.loads((out / "results.json").read_text())["scores"]
    assert scores["fbank"] == pytest.approx(0.0)
    expected = 1000 * (rows["fbank_global"]["test"]["accuracy"] - 0.25) / 0.75
    assert scores["fbank_global"] == pytest.approx(expected)
    assert "fbank_global" in table and (out / "leaderboard.md").is_file()
    assert (out / "hubert_tiny" / "ks" / "checkpoints" / "best.pt").is_file()

    # The same command again: every pair is done, nothing trains.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "train", no_training)
    refs = tmp_path / "refs.yaml"
    refs.write_text("ks: {baseline: 0.5, topline: 1.0}\n")
    assert main([*argv, "--score-references", str(refs)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert {r["upstream"]: r for r in summary["rows"]} == rows
    assert summary["scores"]["fbank"] == pytest.approx(-500.0)  # accuracy 0.25: half a scale below 0.5


def test_interrupted_pair_resumes_from_its_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    overrides = ["train.max_steps=20", "train.eval_every=10"]
    first = _bench(["fbank_global"], ["ks"], corpus, out, preset="tiny", overrides=overrides)[0]
    # Lose the results (as if killed after training): the rerun reuses the checkpoints, no new steps.
    (out / "fbank_global" / "ks" / "results.json").unlink()
    lines_before = (out / "fbank_global" / "ks" / "metrics.jsonl").read_text()
    second = _bench(["fbank_global"], ["ks"], corpus, out, preset="tiny", overrides=overrides)[0]
    assert second["test"] == first["test"] and second["sub_runs"]["main"]["steps"] == 20
    assert (out / "fbank_global" / "ks" / "metrics.jsonl").read_text() == lines_before


def test_model_selection_never_reads_the_test_split(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    test_ids = {c.id for c in load_cuts(corpus, "ks", "test")}
    real_train, real_batches, real_load = runner.train, FeatureSource.batches, ks_task.load_cuts

    def spy_train(*args, **kwargs):
        state = real_train(*args, **kwargs)
        events.append("training done")
        return state

    def spy_load(path, subset=None, split="train"):
        events.append(f"load {split}")
        return real_load(path, subset, split)

    def spy_batches(self, cuts, *args, **kwargs):
        events.append("test batches made" if {c.id for c in cuts} & test_ids else "batches made")
        make = real_batches(self, cuts, *args, **kwargs)

        def epoch(e: int):
            for batch in make(e):
                events.append("test batch" if {c.id for c in batch.cuts} & test_ids else "batch")
                yield batch

        return epoch

    monkeypatch.setattr(runner, "train", spy_train)
    monkeypatch.setattr(ks_task, "load_cuts", spy_load)
    monkeypatch.setattr(FeatureSource, "batches", spy_batches)
    _bench(["hubert_tiny"], ["ks"], corpus, tmp_path / "out", preset="tiny", overrides=FAST)
    done = events.index("training done")
    first_test = min(i for i, e in enumerate(events) if "test" in e)
    assert first_test > done, events[: first_test + 1]
    assert events.count("load test") == 1 and events.count("test batches made") == 1
    assert events.count("test batch") >= 1


def test_feature_cache_matches_live_features(corpus: Path, tmp_path: Path) -> None:
    cuts = load_cuts(corpus, "ks", "dev")
    upstream = runner.load_upstream_module(runner.parse_upstream("hubert_tiny"))
    live = FeatureSource("hubert_tiny", upstream)
    cached16 = FeatureSource("hubert_tiny", upstream, cache_root=tmp_path / "c16")
    cached32 = FeatureSource("hubert_tiny", upstream, cache_root=tmp_path / "c32", cache_dtype=torch.float32)
    encoder = live.encoder(runner.get_tuning("frozen"), layers=None)
    with torch.no_grad():
        epochs = [s.batches(cuts, 4.0, shuffle=False)(0) for s in (live, cached16, cached32)]
        for b_live, b16, b32 in zip(*epochs):
            assert b_live.hidden_states is None and b16.hidden_states is not None
            assert [c.id for c in b_live.cuts] == [c.id for c in b16.cuts]
            f_live, n_live = encoder(b_live)
            f32, n32 = encoder(b32)
            f16, _ = encoder(b16)
            assert torch.equal(n_live, n32)
            torch.testing.assert_close(f32, f_live, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(f16, f_live, atol=2e-2, rtol=1e-2)
    # A second source finds the shards on disk and computes nothing.
    again = FeatureSource("hubert_tiny", upstream, cache_root=tmp_path / "c16")
    assert len(again.cache.missing(cuts)) == 0


def test_cached_and_live_runs_give_the_same_results(corpus: Path, tmp_path: Path) -> None:
    choice = runner.parse_upstream("fbank_global")
    results = []
    for name, cache_root in (("live", None), ("cached", tmp_path / "features")):
        source = FeatureSource(choice.label, runner.load_upstream_module(choice), cache_root=cache_root,
                               cache_dtype=torch.float32)
        results.append(runner.run_pair("ks", choice, source, corpus, tmp_path / name, preset="tiny",
                                       overrides=FAST))
    assert results[0]["dev"] == results[1]["dev"] and results[0]["test"] == results[1]["test"]
    assert results[0]["layer_weights"] == results[1]["layer_weights"]


def test_lr_sweep_selects_on_dev_and_tests_only_the_winner(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    row = _bench(["fbank_global"], ["ks"], corpus, out, preset="tiny", lr_sweep=[1e-2, 1e-6],
                           overrides=FAST)[0]
    assert set(row["dev_by_lr"]) == {"0.01", "1e-06"}
    assert row["lr"] == 1e-2 and row["dev_by_lr"]["0.01"]["accuracy"] > row["dev_by_lr"]["1e-06"]["accuracy"]
    winner = json.loads((out / "fbank_global" / "ks" / "lr0.01" / "results.json").read_text())
    loser = json.loads((out / "fbank_global" / "ks" / "lr1e-06" / "results.json").read_text())
    assert winner["test"] == row["test"] and loser["test"] is None


def test_finetune_trains_the_upstream_with_its_own_lr(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    row = _bench(["hubert_tiny"], ["ks"], corpus, out, preset="tiny", tuning="full",
                           overrides=["train.max_steps=4", "train.eval_every=4", "upstream_lr=1e-3"])[0]
    assert row["tuning"] == "full" and row["params"]["trainable"] > row["params"]["upstream"]
    assert not (out / "features").exists()  # a trained upstream is never cached
    state = torch.load(out / "hubert_tiny" / "ks" / "checkpoints" / "last.pt", weights_only=True)
    upstream_keys = [k for k in state["model"] if k.startswith("encoder.upstream.")]
    assert upstream_keys
    groups = state["optimizer"]["param_groups"]
    assert sorted(g["initial_lr"] for g in groups) == [1e-3, 1e-2]


def test_layer_weights_learn_at_their_own_lr(corpus: Path, tmp_path: Path) -> None:
    moved = {}
    for lr in (None, 0.1):
        extra = [] if lr is None else [f"layer_weights_lr={lr}"]
        row = _bench(["hubert_tiny"], ["ks"], corpus, tmp_path / str(lr), preset="tiny",
                               overrides=["train.max_steps=6", "train.eval_every=6", *extra])[0]
        moved[lr] = max(row["layer_weights"]) - min(row["layer_weights"])
        state = torch.load(tmp_path / str(lr) / "hubert_tiny" / "ks" / "checkpoints" / "last.pt",
                           weights_only=True)
        groups = state["optimizer"]["param_groups"]
        if lr is not None:  # the head at the task's lr, the weights at theirs without decay
            assert [(g["initial_lr"], g["weight_decay"]) for g in groups][-1] == (0.1, 0.0)
            assert len(groups[-1]["params"]) == 1
    assert moved[0.1] > 10 * moved[None]


def test_frozen_checkpoints_hold_only_the_trained_parts(corpus: Path, tmp_path: Path) -> None:
    _bench(["hubert_tiny"], ["ks"], corpus, tmp_path, preset="tiny",
                     overrides=["train.max_steps=2", "train.eval_every=2"])
    state = torch.load(tmp_path / "hubert_tiny" / "ks" / "checkpoints" / "best.pt", weights_only=True)
    trained = {"encoder.featurizer.weights", "head.projection.weight", "head.projection.bias",
               "head.classifiers.0.weight", "head.classifiers.0.bias"}
    # plus the record of the base upstream (weights fingerprint, tuning) the trained parts belong to
    assert set(state["model"]) == trained | {"encoder._extra_state"}
    assert state["model"]["encoder._extra_state"]["tuning"] == "frozen"


def test_random_init_is_a_named_reproducible_control() -> None:
    choice = runner.parse_upstream("hubert_tiny", random_init=True)
    assert choice == runner.parse_upstream("hubert_tiny@random")
    assert choice.label == "hubert_tiny@random" and choice.source == "hubert_tiny"
    first, second = runner.load_upstream_module(choice), runner.load_upstream_module(choice)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    expected = runner.UpstreamChoice("fbank_global", "fbank_raw", random_init=False, corpus_norm=True)
    assert runner.parse_upstream("fbank_global") == expected


def test_reinitialise_replaces_every_trained_weight() -> None:
    upstream = runner.load_upstream_module(runner.parse_upstream("hubert_tiny"))
    with torch.no_grad():
        for p in upstream.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + 5.0)  # stand-in for pre-trained weights
    trained = {name: p.detach().clone() for name, p in upstream.named_parameters()}
    runner.reinitialise(upstream, seed=0)
    for name, p in upstream.named_parameters():
        assert (p - trained[name]).abs().min() > 1.0, name


def test_reinitialise_gives_the_waveform_cnn_its_own_init() -> None:
    # The CNN's Kaiming init lives in its convolutions' reset_parameters, so the untrained control (parents are
    # reset before children) gets the same init as a freshly built model, not PyTorch's shrinking default.
    from speechrep.upstream import load_upstream

    def conv_stats(upstream: torch.nn.Module) -> tuple[list[float], float]:
        convs = [block.conv for block in upstream.feature_encoder.layers]
        ratios = [float(c.weight.detach().std() / (2.0 / c.weight[0].numel()) ** 0.5) for c in convs]
        torch.manual_seed(1)
        wavs = 0.03 * torch.randn(1, 16000)  # speech-like level
        with torch.no_grad():
            feats, _ = upstream.conv_features(wavs, torch.tensor([16000]))
        return ratios, float(feats.square().mean().sqrt())

    upstream = load_upstream("hubert_tiny")
    fresh = conv_stats(upstream)
    runner.reinitialise(upstream, seed=0)
    for ratios, rms in (fresh, conv_stats(upstream)):
        assert all(0.8 < r < 1.2 for r in ratios), ratios  # Kaiming-normal std: sqrt(2 / fan_in)
        assert rms > 0.02, rms  # PyTorch's default conv init leaves ~4e-4 after seven layers


def test_exported_upstream_directory_runs_under_its_run_name(corpus: Path, tmp_path: Path) -> None:
    from speechrep.upstream import export_upstream, load_upstream

    export_upstream(load_upstream("hubert_tiny"), tmp_path / "my_run" / "upstream", {"note": "test"})
    assert runner.parse_upstream(str(tmp_path / "my_run" / "upstream")).label == "my_run"
    assert runner.parse_upstream(f"mine={tmp_path / 'my_run' / 'upstream'}@random").label == "mine@random"
    row = _bench([str(tmp_path / "my_run" / "upstream")], ["ks"], corpus, tmp_path / "out",
                           preset="tiny", overrides=["train.max_steps=2", "train.eval_every=2"])[0]
    assert row["upstream"] == "my_run" and (tmp_path / "out" / "my_run" / "ks" / "results.json").is_file()
    with pytest.raises(runner.ConfigError, match="unknown upstream"):
        _bench(["no_such_upstream"], ["ks"], corpus, tmp_path / "out2")


def test_cache_keeps_values_beyond_fp16_range(tmp_path: Path) -> None:
    from lhotse.dataset.collation import collate_audio

    from speechrep.downstream.features import FeatureCache
    from speechrep.upstream.base import UpstreamOutput

    class Loud(torch.nn.Module):
        sample_rate, stride, hidden_sizes = 16000, 160, [2, 2]

        def forward(self, wavs, wav_lens):  # noqa: ANN001, ANN202
            frames = wavs[:, : wavs.shape[1] // 160 * 160].reshape(len(wavs), -1, 160)
            h = torch.stack([frames.mean(-1), frames.std(-1)], -1)
            return UpstreamOutput([h, h * 1e6], wav_lens // 160)

    corpus = make_corpus(tmp_path / "c", ("ks",))
    cuts = load_cuts(corpus, "ks", "dev").subset(first=3)
    cache = FeatureCache(tmp_path / "cache")
    cache.fill(cuts, Loud(), torch.device("cpu"))
    states, lengths = cache.read(cuts, 2)
    live = Loud()(*collate_audio(cuts))
    assert torch.isfinite(states[1]).all() and states[1].abs().max() > 1e5
    for i in range(3):
        n = int(lengths[i])
        torch.testing.assert_close(states[1][i, :n], live.hidden_states[1][i, :n], rtol=1e-6, atol=0)
        torch.testing.assert_close(states[0][i, :n], live.hidden_states[0][i, :n], rtol=2e-3, atol=1e-4)


def test_overrides_apply_to_every_task_or_to_one(tmp_path: Path) -> None:
    from speechrep.downstream.tasks import get_task

    overrides = ["train.max_steps=7", "pr.train.lr=0.5", "ks.projection_size=8"]
    ks = runner.load_task_config(get_task("ks"), "tiny", overrides)
    pr = runner.load_task_config(get_task("pr"), "tiny", overrides)
    assert ks.train.max_steps == pr.train.max_steps == 7
    assert pr.train.lr == 0.5 and ks.train.lr == 1e-2 and ks.projection_size == 8
    with pytest.raises(runner.ConfigError, match="unknown key"):
        runner.load_task_config(get_task("pr"), None, ["projection_size=8"])
    with pytest.raises(runner.ConfigError, match="no preset"):
        runner.load_task_config(get_task("ks"), "nonexistent")


def test_bad_input_gives_one_line_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    from lhotse import CutSet

    base = ["benchmark", "--upstream", "fbank", "--corpus", str(corpus), "--out", str(tmp_path / "o")]
    assert main([*base, "--tasks", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main([*base, "--tasks", "ks", "--lr-sweep", "1e-2,fast"]) == 2
    assert "--lr-sweep" in capsys.readouterr().err
    missing = ["benchmark", "--upstream", "fbank", "--tasks", "ks", "--corpus", str(tmp_path / "none"),
               "--out", str(tmp_path / "o")]
    assert main(missing) == 2 and "no such folder" in capsys.readouterr().err
    # A cut without its label names the cut and the field.
    broken = tmp_path / "broken"
    (broken / "ks").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        cuts = load_cuts(corpus, "ks", split)
        if split == "train":
            first = next(iter(cuts))
            first.supervisions[0].custom = {}
        CutSet.from_cuts(cuts).to_file(broken / "ks" / f"{split}.jsonl.gz")
    argv = ["benchmark", "--upstream", "fbank", "--tasks", "ks", "--corpus", str(broken), "--out",
            str(tmp_path / "o2"), "--preset", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"cut {first.id!r}" in err and "'keyword'" in err


def test_pair_wall_time_sums_every_run(corpus: Path, tmp_path: Path) -> None:
    row = _bench(["fbank_global"], ["ks"], corpus, tmp_path, preset="tiny", lr_sweep=[1e-2, 1e-3],
                           overrides=["train.max_steps=4", "train.eval_every=4"])[0]
    runs = [json.loads((tmp_path / "fbank_global" / "ks" / f"lr{lr}" / "results.json").read_text())
            for lr in ("0.01", "0.001")]
    assert row["wall_time_s"] == pytest.approx(sum(r["wall_time_s"] for r in runs), abs=0.02)
    assert row["upstream_lr"] is None and all(r["wall_time_s"] > 0 for r in runs)


def test_benchmark_reads_features_that_extract_wrote(corpus: Path, tmp_path: Path, capsys) -> None:
    from speechrep.upstream import export_upstream, load_upstream

    torch.manual_seed(0)
    model = export_upstream(load_upstream("hubert_tiny"), tmp_path / "model", {"test": True})
    splits = [str(corpus / "ks" / f"{split}.jsonl.gz") for split in ("train", "dev", "test")]
    store = tmp_path / "feats"
    assert main(["extract", *splits[:2], "--upstream", str(model), "--layers", "all", "--precision", "fp16",
                 "--out", str(store)]) == 0
    argv = ["benchmark", "--upstream", f"tiny={model}", "--tasks", "ks", "--corpus", str(corpus), "--preset", "tiny",
            *FAST]
    # The store lacks the test split: one line when the test split is read, nothing computed in its place.
    assert main(argv + ["--out", str(tmp_path / "partial"), "--features", str(store)]) != 0
    assert "not in the feature store" in capsys.readouterr().err
    assert main(["extract", splits[2], "--upstream", str(model), "--layers", "all", "--precision", "fp16",
                 "--out", str(store)]) == 0
    assert main(argv + ["--out", str(tmp_path / "stored"), "--features", str(store)]) == 0
    assert main(argv + ["--out", str(tmp_path / "own")]) == 0
    assert not (tmp_path / "stored" / "features").exists()  # nothing computed: every cut came from the store
    stored, own = (json.loads((tmp_path / d / "tiny" / "ks" / "results.json").read_text()) for d in ("stored", "own"))
    assert stored["test"]["accuracy"] == pytest.approx(own["test"]["accuracy"], abs=0.07)
    assert main(argv + ["--out", str(tmp_path / "o"), "--features", str(store), "--tuning", "full"]) == 2
    assert "cannot use stored features" in capsys.readouterr().err


def test_runs_of_other_upstreams_share_an_out_but_never_a_pair(corpus: Path, tmp_path: Path) -> None:
    from speechrep.downstream.runner import BenchmarkConfig, benchmark
    from speechrep.errors import SpeechrepError
    from speechrep.storage import OutputLock

    out = tmp_path / "out"

    def cfg(upstream: str) -> BenchmarkConfig:
        return BenchmarkConfig(upstreams=[upstream], tasks=["ks"], corpus=corpus, out=out, preset="tiny",
                               overrides=list(FAST))

    # Another run (e.g. a demo lane benchmarking another upstream) holds the out folder: this one proceeds.
    with OutputLock(out, "a run of another upstream", shared=True):
        assert benchmark(cfg("fbank"))[0]["upstream"] == "fbank"
        # ...but a pair another run is training is refused with the holder's name, and left as it is.
        with OutputLock(out / "fbank_global" / "ks", "the other run"):
            with pytest.raises(SpeechrepError, match="in use by the other run"):
                benchmark(cfg("fbank_global"))
        assert not (out / "fbank_global" / "ks" / "results.json").exists()
    # Starting over needs the folder alone: refused while another run holds it.
    with OutputLock(out, "a run of another upstream", shared=True):
        with pytest.raises(SpeechrepError, match="in use by"):
            benchmark(BenchmarkConfig(**{**vars(cfg("fbank")), "overwrite": True}))
    assert (out / "fbank" / "ks" / "results.json").is_file()


def test_two_benchmarks_with_other_settings_cannot_both_record_them(corpus: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import threading
    import time

    import speechrep.storage as storage
    from speechrep.storage import OutputFolder, OutputLock

    # Widen the window between reading "no record yet" and writing one, so both runs would pass unchecked
    # if nothing kept them apart.
    write = storage.atomic_write_json
    monkeypatch.setattr(storage, "atomic_write_json", lambda path, data: (time.sleep(0.3), write(path, data)))

    out = tmp_path / "out"
    results: list[str] = []

    def start(preset: str) -> None:
        try:
            with OutputFolder(out, f"run {preset}", {"preset": preset}, shared=True):
                results.append(preset)
        except Exception as error:  # noqa: BLE001 - the one that lost the race
            results.append(type(error).__name__)

    with OutputLock(out, "an earlier run", shared=True):  # a shared holder does not block the check
        threads = [threading.Thread(target=start, args=(p,)) for p in ("tiny", "small")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) in (["OutputError", "tiny"], ["OutputError", "small"])

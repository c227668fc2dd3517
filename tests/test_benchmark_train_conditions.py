"""`speechrep benchmark --train-conditions`: heads trained on distorted audio (one condition drawn per cut and
epoch, live, never through the clean cache); dev stays clean; without the flag nothing changes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from lhotse import CutSet

import speechrep.downstream.features as features
import speechrep.downstream.runner as runner
from speechrep.cli import main

FAST = ["train.max_steps=20", "train.eval_every=10"]
MIX = "clean,noise:snr=0,kind=white"
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--upstream", "fbank_global", "--tasks", "ks", "--corpus", str(corpus),
            "--out", str(out), "--preset", "tiny", *extra, *FAST]


def _ids(corpus: Path, split: str) -> set[str]:
    return {c.id for c in CutSet.from_file(corpus / "ks" / f"{split}.jsonl.gz")}


def test_train_conditions_distort_training_only(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    drawn: list[tuple[str, int, str]] = []
    real_draw = features.draw_condition

    def spy(conditions, utterance_id, seed=0, epoch=0):  # noqa: ANN001, ANN202
        chosen = real_draw(conditions, utterance_id, seed, epoch)
        drawn.append((utterance_id, epoch, str(chosen)))
        return chosen

    read: list[str] = []  # cut ids read from the clean feature cache
    real_read = features.FeatureCache.read

    def read_spy(self, cuts, num_layers):  # noqa: ANN001, ANN202
        read.extend(c.id for c in cuts)
        return real_read(self, cuts, num_layers)

    monkeypatch.setattr(features, "draw_condition", spy)
    monkeypatch.setattr(features.FeatureCache, "read", read_spy)
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    train_ids = _ids(corpus, "train")
    assert main(_argv(corpus, plain)) == 0
    assert not drawn  # the default run draws nothing
    plain_reads = sum(i in train_ids for i in read)
    read.clear()
    assert main(_argv(corpus, mixed, "--train-conditions", MIX, "--test-conditions", "clean,noise:snr=0")) \
        == 0
    # training ran live: train cuts were read from the cache once only, for fbank_global's clean statistics
    assert sum(i in train_ids for i in read) == len(train_ids) < plain_reads
    # only training cuts were distorted, each condition was drawn, and each cut anew per epoch
    assert {u for u, _, _ in drawn} <= train_ids
    assert {c for _, _, c in drawn} == {"clean", "noise:snr=0,kind=white"}
    per_cut: dict[str, set[str]] = {}
    for u, _, c in drawn:
        per_cut.setdefault(u, set()).add(c)
    assert any(len(c) == 2 for c in per_cut.values())
    # the same (cut, epoch) always gets the same condition
    assert len({(u, e): c for u, e, c in drawn}) == len(set(drawn))

    before = json.loads((plain / "results.json").read_text())["rows"][0]
    after = json.loads((mixed / "results.json").read_text())["rows"][0]
    assert "train_conditions" not in before
    assert after["train_conditions"] == ["clean", "noise:snr=0,kind=white"]
    run = json.loads((mixed / "fbank_global" / "ks" / "results.json").read_text())
    assert run["train_conditions"] == after["train_conditions"] and "test_by_condition" in run
    assert "\ntrain_conditions:\n- clean\n" in (mixed / "config.yaml").read_text()
    assert "\ntrain_conditions:" not in (plain / "config.yaml").read_text()


def test_distorted_training_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    rows = []
    for name in ("a", "b"):
        assert main(_argv(corpus, tmp_path / name, "--train-conditions", "noise:snr=5,reverb:rt60=0.8")) == 0
        rows.append(json.loads((tmp_path / name / "results.json").read_text())["rows"][0])
    assert rows[0]["dev"] == rows[1]["dev"] and rows[0]["test"] == rows[1]["test"]
    assert rows[0]["train_conditions"] == ["noise:snr=5", "reverb:rt60=0.8"]


def test_mixture_batches_hold_the_drawn_distortion(corpus: Path) -> None:
    from speechrep.audio.conditions import draw_condition, parse_conditions

    cuts = CutSet.from_file(corpus / "ks" / "train.jsonl.gz").subset(first=6)
    mixture = parse_conditions("clean,pitch:semitones=4,dropout:rate=0.5")
    source = features.FeatureSource("fbank_raw", runner.load_upstream_module(runner.parse_upstream("fbank")))
    for epoch in (0, 1):
        for batch in source.batches(cuts, 100.0, shuffle=True, seed=3, mixture=mixture)(epoch):
            assert batch.hidden_states is None  # live
            for i, cut in enumerate(batch.cuts):
                expected = draw_condition(mixture, cut.id, 3, epoch).apply(cut.load_audio()[0], cut.id)
                n = int(batch.wav_lens[i])
                assert n == expected.size and (batch.wavs[i, :n].numpy() == expected).all()


def test_bad_or_changed_train_conditions_are_refused(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(_argv(corpus, tmp_path / "o", "--train-conditions", "clean,loud")) == 2
    err = capsys.readouterr().err
    assert "train condition 'loud': unknown kind 'loud'" in err and not (tmp_path / "o").exists()
    assert main(_argv(corpus, tmp_path / "o", "--train-conditions", "")) == 2
    assert "--train-conditions: none given" in capsys.readouterr().err
    # an --out trained clean is not resumed with distorted training (its rows would mix both)
    assert main(_argv(corpus, tmp_path / "p")) == 0
    assert main(_argv(corpus, tmp_path / "p", "--train-conditions", "noise:snr=5")) != 0
    assert "train_conditions: none -> noise:snr=5" in capsys.readouterr().err
    # and one trained distorted is not resumed clean
    assert main(_argv(corpus, tmp_path / "q", "--train-conditions", "noise:snr=5")) == 0
    assert main(_argv(corpus, tmp_path / "q")) != 0
    assert "train_conditions" in capsys.readouterr().err


def test_conditions_added_to_a_finished_out_test_its_checkpoint(corpus: Path, tmp_path: Path) -> None:
    """`--test-conditions` on an --out finished without them: each pair's checkpoint is tested under them,
    without training again (it used to be skipped silently, leaving rows without conditions)."""
    out = tmp_path / "o"
    assert main(_argv(corpus, out)) == 0
    run = out / "fbank_global" / "ks"
    logged = (run / "metrics.jsonl").read_text()
    before = json.loads((out / "results.json").read_text())["rows"][0]
    assert main(_argv(corpus, out, "--test-conditions", "clean,noise:snr=0")) == 0
    after = json.loads((out / "results.json").read_text())["rows"][0]
    assert after["test"] == before["test"] and after["dev"] == before["dev"]
    assert set(after["test_by_condition"]) == {"clean", "noise:snr=0"}
    assert (run / "metrics.jsonl").read_text() == logged  # no training step was run again
    assert main(_argv(corpus, out, "--test-conditions", "clean,noise:snr=0,reverb:rt60=0.8")) == 0
    again = json.loads((out / "results.json").read_text())["rows"][0]
    assert set(again["test_by_condition"]) == {"clean", "noise:snr=0", "reverb:rt60=0.8"}
    assert again["test_by_condition"]["noise:snr=0"] == after["test_by_condition"]["noise:snr=0"]

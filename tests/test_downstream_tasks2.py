"""ASV, SD, SF, SE, SS and QbE: their label/scoring helpers on hand-made cases, and every task end to end
from the CLI (fbank and hubert_tiny) on the synthetic mini-SUPERB (presets `micro`, and `tiny` for sd)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import MonoCut, SupervisionSegment

from speechrep.cli import main
from speechrep.downstream import runner
from speechrep.downstream.metrics import Segment, der_from_segments, parse_slots, si_sdr, slot_type_f1
from speechrep.downstream.tasks import asv, get_task, qbe, sd, se, sf
from speechrep.errors import SpeechrepError
from speechrep.train import read_metrics

TASKS = ("asv", "sd", "sf", "se", "ss", "qbe")
UPSTREAMS = ("fbank", "hubert_tiny")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------------ ASV

def test_asv_trials_and_cosine_scoring(tmp_path: Path) -> None:
    path = tmp_path / "trials.txt"
    path.write_text("1 a b\n0 a c\n\n1 c d\n")
    trials = asv.read_trials(path)
    assert trials == [(1, "a", "b"), (0, "a", "c"), (1, "c", "d")]
    embeddings = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([2.0, 0.1]), "c": torch.tensor([0.0, 1.0]),
                  "d": torch.tensor([0.1, 3.0])}
    scores, labels = asv.score_trials(embeddings, trials)
    assert labels.tolist() == [1, 0, 1]
    assert scores[1] == pytest.approx(0.0) and scores[0] > 0.99 and scores[2] > 0.99
    path.write_text("1 a b\nyes a c\n")
    with pytest.raises(SpeechrepError, match="trials.txt:2"):
        asv.read_trials(path)
    with pytest.raises(SpeechrepError, match="'e'"):
        asv.score_trials(embeddings, [(1, "a", "e")])


# ------------------------------------------------------------------------------------------------------- SD

def _conversation(turns: list[tuple[str, float, float]], duration: float = 1.0) -> MonoCut:
    sups = [SupervisionSegment(id=f"t{k}", recording_id="r", start=s, duration=e - s, speaker=spk)
            for k, (spk, s, e) in enumerate(turns)]
    return MonoCut(id="conv", start=0.0, duration=duration, channel=0, supervisions=sups)


def test_sd_frame_labels_follow_the_turns() -> None:
    cut = _conversation([("bob", 0.3, 0.7), ("al", 0.0, 0.2), ("al", 0.6, 0.8)])
    turns = sd.speaker_turns(cut)
    assert [t.speaker for t in turns] == ["al", "bob", "al"]  # by start time
    activity = sd.frame_activity(turns, 10, 0.1, num_speakers=3)
    # centres 0.05, 0.15, ...: al (first to speak) is channel 0, bob channel 1, channel 2 unused
    assert activity[:, 0].tolist() == [1, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    assert activity[:, 1].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert not activity[:, 2].any()
    with pytest.raises(SpeechrepError, match="3 speakers"):
        sd.frame_activity(turns + [Segment("cy", 0.0, 0.1)], 10, 0.1, num_speakers=2)


def test_sd_decisions_to_turns_and_der() -> None:
    reference = [Segment("al", 0.0, 0.4), Segment("bob", 0.3, 0.8)]
    activity = sd.frame_activity(reference, 50, 0.02, num_speakers=2)
    # Channels swapped (the permutation is free) plus a one-frame blip that the median filter removes.
    probabilities = activity[:, ::-1].astype(np.float32) * 0.9
    probabilities[45, 1] = 0.8
    decisions = sd.smooth_decisions(probabilities, 0.5, 5)
    assert decisions[45, 1] == 0
    hypothesis = sd.activity_to_turns(decisions, 0.02)
    assert sorted((t.speaker, t.start, t.end) for t in hypothesis) == [
        ("0", pytest.approx(0.3), pytest.approx(0.8)), ("1", 0.0, pytest.approx(0.4))]
    assert der_from_segments(reference, hypothesis, sd.SCORING_SHIFT).der == pytest.approx(0.0)
    # Without the filter the blip is a false alarm of one 20 ms frame over 0.9 s of reference speech.
    raw = sd.activity_to_turns(sd.smooth_decisions(probabilities, 0.5, 1), 0.02)
    assert der_from_segments(reference, raw, sd.SCORING_SHIFT).der == pytest.approx(0.02 / 0.9)


# ------------------------------------------------------------------------------------------------------- SF

def test_sf_tagged_transcript_from_iob_tags() -> None:
    words = "book a table for five in new york tonight".split()
    tags = ["O", "O", "O", "O", "B-party_size", "O", "B-city", "I-city", "B-time"]
    text = sf.tagged_transcript(words, tags)
    assert text == ("book a table for B-party_size five E-party_size in B-city new york E-city "
                    "B-time tonight E-time")
    assert parse_slots(text) == {"party_size": ["five"], "city": ["new york"], "time": ["tonight"]}
    assert sf.plain_text(text) == " ".join(words)
    # A stray I- opens a slot; a B- right after another slot closes the first.
    assert sf.tagged_transcript(["x", "y", "z"], ["I-a", "B-b", "I-a"]) == "B-a x E-a B-b y E-b B-a z E-a"
    assert slot_type_f1([text], [text]) == 1.0
    with pytest.raises(SpeechrepError, match="3 words but 2"):
        sf.tagged_transcript(["x", "y", "z"], ["O", "O"])


# -------------------------------------------------------------------------------------------------- SE / SS

def test_phase_sensitive_target_and_masked_mse() -> None:
    torch.manual_seed(0)
    t = torch.arange(8000) / 16000
    clean = (torch.sin(2 * torch.pi * 440 * t) + 0.5 * torch.sin(2 * torch.pi * 1320 * t))[None]
    noise = 0.3 * torch.randn(1, 8000)
    noisy_spec, clean_spec = se.stft(clean + noise), se.stft(clean)
    target = se.phase_sensitive_target(clean_spec, noisy_spec)
    assert torch.allclose(se.phase_sensitive_target(noisy_spec, noisy_spec), noisy_spec.abs(), atol=1e-5)
    assert (target >= 0).all() and (target <= noisy_spec.abs() + 1e-6).all()
    # The oracle mask (target / |X|, within [0, 1]) with the noisy phase enhances the noisy input.
    mask = target / noisy_spec.abs().clamp(min=1e-8)
    enhanced = se.istft(mask * noisy_spec, 8000)
    assert si_sdr(enhanced, clean) > si_sdr(clean + noise, clean) + 5
    # Padding frames never count: a batch item with 3 valid frames ignores the rest.
    estimate, reference = torch.zeros(2, 6, 4), torch.zeros(2, 6, 4)
    reference[0, 3:] = 5.0
    reference[1, :3] = 1.0
    assert se.masked_mse(estimate, reference, torch.tensor([3, 6])).tolist() == [0.0, 0.5]


# ------------------------------------------------------------------------------------------------------ QbE

def test_qbe_truth_and_dtw_scores(tmp_path: Path) -> None:
    path = tmp_path / "truth.txt"
    path.write_text("q1 d1 1\nq1 d2 0\nq2 d2 1\n")
    truth = qbe.read_truth(path, ["q1", "q2"], ["d1", "d2", "d3"])
    assert truth.labels.tolist() == [[True, False, False], [False, True, False]]
    path.write_text("q1 d9 1\n")
    with pytest.raises(SpeechrepError, match="truth.txt:1"):
        qbe.read_truth(path, ["q1"], ["d1"])
    # Layer 0 is noise; in layer 1 each query's frames are planted inside its matching document.
    generator = torch.Generator().manual_seed(0)
    docs = [[torch.randn(30, 8, generator=generator) for _ in range(2)] for _ in range(3)]
    queries = [[torch.randn(5, 8, generator=generator), docs[i][1][10:15] * 2.0] for i in range(2)]
    scores = qbe.layer_scores(queries, docs, layer=1)
    assert scores.shape == (2, 3) and scores.argmax(axis=1).tolist() == [0, 1]


# --------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from speechrep.data.synth import make_synthetic_corpus

    root = tmp_path_factory.mktemp("mini_superb")
    # micro has a single sd conversation per split; the shuffling sampler needs at least two.
    make_synthetic_corpus(root, preset="micro", subsets=[t for t in TASKS if t != "sd"], num_workers=2)
    make_synthetic_corpus(root, preset="tiny", subsets=["sd"], num_workers=2)
    return root


@pytest.fixture(scope="module")
def results(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["benchmark", "--corpus", str(corpus), "--out", str(out), "--tasks", ",".join(TASKS),
            "--preset", "tiny", "train.max_steps=4", "train.eval_every=4", "train.log_every=1"]
    for upstream in UPSTREAMS:
        argv += ["--upstream", upstream]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    return out, {(r["upstream"], r["task"]): r for r in rows}


def test_every_task_runs_end_to_end(results) -> None:
    out, rows = results
    assert set(rows) == {(u, t) for u in UPSTREAMS for t in TASKS}
    for (upstream, task), row in rows.items():
        spec = get_task(task)
        assert row["metric"] == spec.metric and row["higher_is_better"] == spec.higher_is_better
        for split in ("dev", "test"):
            assert all(np.isfinite(v) for v in row[split].values()), (upstream, task, row[split])
        if spec.trains:
            losses = [r["loss"] for r in read_metrics(out / upstream / task, "train")]
            assert len(losses) == 4 and all(np.isfinite(losses)), (upstream, task)
    assert (out / "leaderboard.md").is_file()


def test_metric_ranges(results) -> None:
    _, rows = results
    for upstream in UPSTREAMS:
        test = {task: rows[(upstream, task)]["test"] for task in TASKS}
        assert 0.0 <= test["asv"]["eer"] <= 1.0 and 0.0 <= test["asv"]["min_dcf"] <= 1.0 + 1e-9
        assert test["sd"]["der"] == pytest.approx(test["sd"]["miss"] + test["sd"]["false_alarm"]
                                                  + test["sd"]["confusion"])
        assert 0.0 <= test["sf"]["slot_type_f1"] <= 1.0 and test["sf"]["slot_value_cer"] >= 0.0
        assert 1.0 <= test["se"]["pesq"] <= 4.65 and 0.0 <= test["se"]["stoi"] <= 1.0
        assert test["ss"]["si_sdri"] < test["ss"]["si_sdr"] + 20  # mixtures sit near 0 dB
        assert 0.0 <= test["qbe"]["mtwv"] <= 1.0 and 0.0 < test["qbe"]["map"] <= 1.0


def test_qbe_trains_nothing_and_reports_the_dev_layer(results) -> None:
    out, rows = results
    row = rows[("hubert_tiny", "qbe")]
    assert row["sub_runs"]["main"]["steps"] == 0
    assert not list((out / "hubert_tiny" / "qbe").glob("checkpoints/*"))
    per_layer = lambda split: [(row[split][f"mtwv_layer{k}"]) for k in range(3)]  # noqa: E731
    layer = int(row["test"]["layer"])
    assert layer == int(row["dev"]["layer"]) and row["dev"]["mtwv"] == max(per_layer("dev"))
    assert row["test"]["mtwv"] == per_layer("test")[layer]


def test_builds_never_read_test_labels(corpus: Path, monkeypatch) -> None:
    read: list[str] = []
    for module, name in ((asv, "read_trials"), (qbe, "read_truth")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda path, *a, _real=real: (read.append(Path(path).name),
                                                                         _real(path, *a))[1])
    source = runner.FeatureSource("fbank", runner.load_upstream_module(runner.parse_upstream("fbank")))
    for task, labels in (("asv", "trials"), ("qbe", "truth")):
        read.clear()
        spec = get_task(task)
        parts = spec.build(runner.load_task_config(spec, "tiny"), corpus, source)
        assert read == [f"dev_{labels}.txt"]
        parts.load_test()
        assert read == [f"dev_{labels}.txt", f"test_{labels}.txt"]

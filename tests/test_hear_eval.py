"""The native HEAR runner: metrics against hand cases, the published task layout, filterbanks end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechrep.bench import hear_eval as he
from speechrep.errors import ConfigError
from speechrep.upstream import load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 16000
TONES = {"low": 300.0, "mid": 1200.0, "high": 4000.0}


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 + 0.2 * rng.random()) * np.sin(2 * np.pi * freq * t + rng.random() * 6.28)


def _write_task(root: Path, meta: dict, labels: list[str], splits: dict[str, dict[str, object]],
                audio: dict[str, np.ndarray]) -> Path:
    """A task folder in the published layout: metadata, vocabulary, <split>.json, 16000/<split>/*.wav."""
    root.mkdir(parents=True)
    (root / "task_metadata.json").write_text(json.dumps(meta))
    with open(root / "labelvocabulary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["idx", "label"])
        w.writerows(enumerate(labels))
    for split, targets in splits.items():
        (root / f"{split}.json").write_text(json.dumps(targets))
        (root / "16000" / split).mkdir(parents=True)
        for name in targets:
            sf.write(root / "16000" / split / name, audio[name].astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def scene_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5-fold multiclass scene task: 30 one-second clips, 3 well-separated tones in a little noise."""
    rng = np.random.default_rng(0)
    splits, audio = {}, {}
    for fold in range(5):
        targets = {}
        for k, (label, freq) in enumerate(TONES.items()):
            for j in range(2):
                name = f"f{fold}_{label}_{j}.wav"
                targets[name] = [label]
                audio[name] = _tone(freq, 1.0, rng) + 0.01 * rng.standard_normal(SR)
        splits[f"fold{fold:02d}"] = targets
    meta = {"task_name": "tones3", "version": "test", "embedding_type": "scene",
            "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": 5,
            "sample_duration": 1.0,
            "evaluation": ["top1_acc", "mAP", "aucroc", "event_onset_200ms_fms"]}
    return _write_task(tmp_path_factory.mktemp("hear") / "tones3", meta, list(TONES), splits, audio)


@pytest.fixture(scope="module")
def event_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/valid/test event task: 2 s clips, one 400 Hz and one 2 kHz tone event (0.5–0.8 s) each."""
    rng = np.random.default_rng(1)
    splits, audio = {}, {}
    for split, n in (("train", 8), ("valid", 3), ("test", 3)):
        targets = {}
        for i in range(n):
            name, wav, events = f"{split}{i}.wav", 0.01 * rng.standard_normal(2 * SR), []
            for label, freq, lo in (("boop", 400.0, 0.0), ("beep", 2000.0, 1.0)):
                start = lo + 0.3 * rng.random()
                dur = 0.5 + 0.3 * rng.random()
                a = int(start * SR)
                tone = _tone(freq, dur, rng)
                wav[a:a + len(tone)] += tone
                events.append({"label": label, "start": 1000 * start, "end": 1000 * (start + dur)})
            audio[name], targets[name] = wav, events
        splits[split] = targets
    meta = {"task_name": "beeps", "embedding_type": "event", "prediction_type": "multilabel",
            "split_mode": "trainvaltest", "sample_duration": 2.0,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"]}
    return _write_task(tmp_path_factory.mktemp("hear") / "beeps", meta, ["beep", "boop"], splits, audio)


SMALL = he.HearEvalConfig(grid={"hidden_layers": [1], "hidden_dim": [64], "lr": [1e-3, 1e-2]},
                          base=he.PredictorConfig(max_epochs=60, patience=5, check_every=3, batch_size=256))


# ---------------------------------------------------------------- metrics, by hand

def test_accuracy_and_map_by_hand() -> None:
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    targets = np.array([[1, 0], [1, 0], [0, 1]])
    assert he.top1_accuracy(scores, targets) == pytest.approx(1 / 3)
    # class 0 ranked .9(+) .7(−) .4(+): AP = (1/1 + 2/3) / 2 = 5/6; class 1 ranked .6(−) .3(+) .1(−): AP = 1/2
    assert he.mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_aucroc_and_d_prime_by_hand() -> None:
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    # class 0: positives .9 .4 against negatives .7 .2 win 3 of 4 pairs; class 1 likewise: AUC 3/4 each
    assert he.auc_roc(scores, targets) == pytest.approx(0.75)
    assert he.d_prime(scores, targets) == pytest.approx(np.sqrt(2.0) * 0.6744897501960817)
    assert he.d_prime(scores[:, ::-1], targets) == pytest.approx(-np.sqrt(2.0) * 0.6744897501960817)
    one_sided = np.array([[1, 0], [1, 0], [1, 0], [1, 0]])  # no class has both positives and negatives
    assert np.isnan(he.auc_roc(scores, one_sided)) and np.isnan(he.d_prime(scores, one_sided))


def test_onset_fmeasure_hit_insertion_deletion() -> None:
    ref = {"a": [{"label": "dog", "start": 1000, "end": 2000}, {"label": "dog", "start": 5000, "end": 6000}]}
    est = {"a": [{"label": "dog", "start": 1150, "end": 1800},  # hit: onset 150 ms late, offset ignored
                 {"label": "cat", "start": 3000, "end": 3500}]}  # insertion; the second dog is a deletion
    assert he.event_fmeasure(est, ref) == pytest.approx(2 * 1 / (2 + 2))  # F = 2TP / (Nref + Nsys)
    late = {"a": [{"label": "dog", "start": 1250, "end": 2000}]}  # 250 ms > 200 ms collar: no hit
    assert he.event_fmeasure(late, ref) == 0.0
    assert he.event_fmeasure(late, ref, collar_ms=250) == pytest.approx(2 / 3)
    # two estimates near one reference: one-to-one matching counts a single hit
    twice = {"a": [{"label": "dog", "start": 950, "end": 1500}, {"label": "dog", "start": 1050, "end": 1500}]}
    assert he.event_fmeasure(twice, ref) == pytest.approx(2 * 1 / (2 + 2))
    # a file with estimates but no reference adds insertions
    assert he.event_fmeasure({**est, "b": late["a"]}, ref) == pytest.approx(2 * 1 / (2 + 3))


def test_onset_offset_fmeasure_uses_the_longer_of_collar_and_half_the_length() -> None:
    ref = {"a": [{"label": "dog", "start": 1000, "end": 2000},  # 1 s long: offset collar max(200, 500) ms
                 {"label": "dog", "start": 5000, "end": 5200}]}  # 0.2 s long: offset collar 200 ms
    est = {"a": [{"label": "dog", "start": 1100, "end": 2450},  # onset and offset (450 ≤ 500 ms) both close
                 {"label": "dog", "start": 5000, "end": 5500}]}  # onset exact, offset 300 ms > 200 ms late
    assert he.event_fmeasure(est, ref) == pytest.approx(1.0)  # onsets only: both hit
    assert he.event_fmeasure(est, ref, offsets=True) == pytest.approx(2 * 1 / (2 + 2))
    stretched = {"a": [{"label": "dog", "start": 1100, "end": 2600}, est["a"][1]]}  # 600 ms > 500 ms
    assert he.event_fmeasure(stretched, ref, offsets=True) == 0.0
    # HEAR's event_onset_offset_50ms_20perc_fms: onsets within 50 ms, ends within max(50 ms, 20 % of length)
    onset_offset = he.EVENT_METRICS["event_onset_offset_50ms_20perc_fms"]
    near = {"a": [{"label": "dog", "start": 1040, "end": 2190}, {"label": "dog", "start": 4960, "end": 5250}]}
    assert onset_offset(near, ref) == pytest.approx(1.0)  # 190 ≤ 200 ms (20 % of 1 s); 50 ≤ 50 ms
    assert onset_offset({"a": [near["a"][0], {**near["a"][1], "end": 5260}]}, ref) == pytest.approx(0.5)


def test_segment_error_rate_by_hand() -> None:
    # 1 s segments; ref dog 0–1.5 s → segments 0, 1; est dog 0–0.8 s → segment 0; cat 2.1–2.5 s → segment 2
    ref = {"a": [{"label": "dog", "start": 0, "end": 1500}]}
    est = {"a": [{"label": "dog", "start": 0, "end": 800}, {"label": "cat", "start": 2100, "end": 2500}]}
    # segment 1: a deletion, segment 2: an insertion; N = 2 → ER = (0 + 1 + 1) / 2
    assert he.segment_error_rate(est, ref) == pytest.approx(1.0)
    # ref dog 0–2 s; est dog 0–1 s (segment 0 only) and cat 1–2 s (segment 1): one substitution in 2 → 0.5
    ref2 = {"a": [{"label": "dog", "start": 0, "end": 2000}]}
    est2 = {"a": [{"label": "dog", "start": 0, "end": 1000}, {"label": "cat", "start": 1000, "end": 2000}]}
    assert he.segment_error_rate(est2, ref2) == pytest.approx(0.5)
    assert he.segment_error_rate(ref2, ref2) == 0.0


def test_frames_to_events_filter_threshold_min_duration() -> None:
    ts = 5.0 + 10.0 * np.arange(100)
    probs = np.zeros((100, 2))
    probs[10:40, 0] = 0.9  # a 290 ms run (first to last timestamp)
    probs[25, 0] = 0.1  # one dropped frame, healed by a 50 ms median filter
    probs[60:70, 1] = 0.9  # 90 ms: dropped by min_duration 100 ms
    assert he.frames_to_events(probs, ts, ["a", "b"], 0.0, 0.0) == [
        {"label": "a", "start": 105.0, "end": 245.0}, {"label": "a", "start": 265.0, "end": 395.0},
        {"label": "b", "start": 605.0, "end": 695.0}]
    healed = he.frames_to_events(probs, ts, ["a", "b"], 50.0, 100.0)
    assert healed == [{"label": "a", "start": 105.0, "end": 395.0}]
    targets = he.frame_targets([{"label": "b", "start": 15.0, "end": 35.0}], ts[:5], ["a", "b"])
    assert targets[:, 1].tolist() == [0, 1, 1, 0, 0] and targets[:, 0].sum() == 0  # start ≤ t < end


# ---------------------------------------------------------------- layout and runner

def test_read_task_kfold_rounds(scene_task: Path) -> None:
    task = he.read_task(scene_task)
    assert task.name == "tones3" and task.labels == ["low", "mid", "high"] and len(task.data_splits) == 5
    assert task.data_splits[4] == {"train": ["fold01", "fold02", "fold03"], "valid": ["fold00"],
                                   "test": ["fold04"]}
    assert he.find_tasks(scene_task.parent) == [scene_task]
    with pytest.raises(ConfigError, match="task_metadata.json"):
        he.read_task(scene_task / "16000")


def test_scene_task_end_to_end_fbank_and_cache(scene_task: Path, tmp_path: Path, monkeypatch) -> None:
    [result] = he.evaluate_tasks("fbank_raw", scene_task, tmp_path, cfg=SMALL)
    assert result["test"]["top1_acc"] >= 0.9 and result["test"]["mAP"] >= 0.9
    assert result["test"]["aucroc"] >= 0.9
    assert result["metrics_not_implemented"] == ["event_onset_200ms_fms"] and len(result["rounds"]) == 5
    assert json.loads((tmp_path / "tones3" / "results.json").read_text())["test"] == result["test"]
    assert sorted(p.name for p in (tmp_path / "tones3" / "embeddings").glob("*.npy"))[0] == "fold00.npy"
    # a second run reads the cached embeddings: the HEAR API is not called again
    monkeypatch.setattr(he, "get_scene_embeddings", lambda *a: pytest.fail("embedded again"))
    again = he.evaluate_tasks("fbank_raw", scene_task, tmp_path, cfg=SMALL)
    assert again[0]["test"] == result["test"]


def test_event_task_end_to_end_fbank(event_task: Path, tmp_path: Path) -> None:
    [result] = he.evaluate_tasks("fbank", event_task, tmp_path, cfg=SMALL)
    assert result["primary"] == "event_onset_200ms_fms" and len(result["rounds"]) == 1
    assert result["rounds"][0]["postprocessing"]["median_filter_ms"] == 250.0
    assert result["test"]["event_onset_200ms_fms"] >= 0.6 and result["test"]["segment_1s_er"] <= 0.6


def test_cli_hear_eval(scene_task: Path, tmp_path: Path, capsys) -> None:
    from speechrep.cli import main

    assert main(["hear-eval", "--upstream", "fbank_raw", "--tasks", str(scene_task.parent),
                 "--out", str(tmp_path), "--grid", "small", "--max-epochs", "30"]) == 0
    assert "tones3" in capsys.readouterr().out and (tmp_path / "tones3" / "results.json").is_file()


def test_majority_baseline_by_hand(scene_task: Path, event_task: Path, tmp_path: Path, capsys) -> None:
    from speechrep.cli import main

    # tones3: every class has the same share of each training fold, so the first class wins every clip
    scene = he.evaluate_tasks("majority", scene_task, tmp_path)[0]
    assert scene["upstream"] == "majority" and len(scene["rounds"]) == 5
    assert scene["test"]["top1_acc"] == pytest.approx(1 / 3) and scene["test"]["mAP"] == pytest.approx(1 / 3)
    assert scene["test"]["aucroc"] == pytest.approx(0.5)
    # beeps: no event predicted, so no onset hit and every reference segment a deletion
    argv = ["hear-eval", "--upstream", "majority", "--tasks", str(event_task), "--out", str(tmp_path)]
    assert main(argv) == 0
    event = json.loads((tmp_path / "beeps" / "results.json").read_text())
    assert event["test"] == {"event_onset_200ms_fms": 0.0, "segment_1s_er": 1.0}
    assert "beeps" in capsys.readouterr().out and not (tmp_path / "beeps" / "embeddings").exists()


def test_random_suffix_reinitialises_like_the_benchmark_controls() -> None:
    from speechrep.downstream.runner import RANDOM_INIT_SEED, reinitialise

    trained, control = he.load_hear_model("hubert_tiny"), he.load_hear_model("hubert_tiny@random")
    reference = load_upstream("hubert_tiny")
    reinitialise(reference, RANDOM_INIT_SEED)
    weights = trained.upstream.state_dict()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in control.upstream.state_dict().items())
    assert any(not torch.equal(v, weights[k]) for k, v in control.upstream.state_dict().items())


def test_report_shows_hear_results_per_upstream(scene_task: Path, tmp_path: Path) -> None:
    from test_report import parse

    from speechrep.bench.leaderboard import write_summary
    from speechrep.bench.report import write_report

    row = {"upstream": "fbank", "task": "ks", "metric": "accuracy", "higher_is_better": True, "percent": True,
           "best_value": 1.0, "dev": {"accuracy": 0.5}, "test": {"accuracy": 0.5}, "layer_weights": [1.0],
           "lr": 0.01}
    write_summary([row], tmp_path)
    assert '<section id="hear">' not in write_report(tmp_path).read_text()
    he.evaluate_tasks("majority", scene_task, tmp_path / "hear" / "majority")
    page = write_report(tmp_path).read_text()
    assert '<section id="hear">' in page and '<a href="#hear">HEAR tasks</a>' in page
    table = parse(page).table("hear")
    assert [c["text"] for c in table[0]][:2] == ["upstream", "tones3 top1_acc"]
    assert table[1][0]["text"] == "majority" and table[1][1]["text"] == "0.333"

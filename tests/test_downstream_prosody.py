"""The prosody and prosody_future tasks: targets on the feature grid, causality, training on a tiny corpus.

The corpus is harmonic complexes whose F0 glides up or down (so the future is predictable from the past),
with a silent gap and a noise burst (unvoiced frames), four "speakers" of different base pitch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from speechrep.downstream import runner
from speechrep.downstream.tasks import get_task, list_tasks
from speechrep.downstream.tasks.prosody import ProsodyTargets, pearson
from speechrep.downstream.tasks.prosody_future import CausalGRU, horizon_name, shift_left

SR = 16000
SPLITS = {"train": 24, "dev": 8, "test": 8}
BASE_F0 = (95.0, 130.0, 180.0, 240.0)
FAST = ["train.max_steps=60", "train.eval_every=30"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _glide(f0: float, octaves_per_s: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2.0 ** (octaves_per_s * t)) / SR
    return sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 7)) * 0.2


def _utterance(i: int, rng: np.random.Generator) -> np.ndarray:
    f0 = BASE_F0[i % len(BASE_F0)] * rng.uniform(0.95, 1.05)
    slope = 0.4 if (i // len(BASE_F0)) % 2 == 0 else -0.4  # stays within 50-500 Hz
    first = _glide(f0, slope, 0.9, rng)
    second = _glide(f0 * 2.0 ** (slope * 1.1), slope, 0.8, rng)  # the glide goes on across the gap
    gap, burst = np.zeros(int(0.1 * SR)), rng.normal(0, 0.05, int(0.1 * SR))
    wav = np.concatenate([gap, first, burst, second, gap]) * rng.uniform(0.5, 1.0)
    return (wav + rng.normal(0, 0.002, len(wav))).astype(np.float32)


def make_prosody_corpus(root: Path, subset: str = "pr") -> Path:
    """CORPUS/<subset>/{train,dev,test}.jsonl.gz of gliding harmonic complexes."""
    audio_dir = root / subset / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for split_index, (split, size) in enumerate(SPLITS.items()):
        rng = np.random.default_rng([7, split_index])
        cuts = []
        for i in range(size):
            cut_id = f"{subset}-{split}-{i:03d}"
            path = audio_dir / f"{cut_id}.flac"
            sf.write(path, _utterance(i, rng), SR)
            rec = Recording.from_file(path, recording_id=cut_id)
            sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=rec.duration,
                                     speaker=f"spk{i % len(BASE_F0)}", text="a glide")
            cuts.append(MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup]))
        CutSet.from_cuts(cuts).to_file(root / subset / f"{split}.jsonl.gz")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prosody_corpus(tmp_path_factory.mktemp("prosody_corpus"))


@pytest.fixture(scope="module")
def results(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    rows = runner.benchmark(runner.BenchmarkConfig(["fbank"], ["prosody", "prosody_future"], corpus, out,
                                                   preset="tiny", overrides=FAST))
    return {r["task"]: r for r in rows}


def test_registered_with_tiny_presets() -> None:
    assert {"prosody", "prosody_future"} <= set(list_tasks())
    for name in ("prosody", "prosody_future"):
        spec = get_task(name)
        assert not spec.higher_is_better and spec.best_value == 0.0
        assert runner.load_task_config(spec, "tiny").train.max_steps <= 200
        assert runner.load_task_config(spec).train.max_steps >= 30_000
    assert runner.load_task_config(get_task("prosody_future")).horizons == [0.12, 0.24, 0.5, 1.0]


def test_targets_follow_the_glide_on_the_frame_grid(corpus: Path) -> None:
    cut = CutSet.from_file(corpus / "pr" / "train.jsonl.gz")[0]
    for stride in (160, 320):
        targets = ProsodyTargets(stride)
        n = int(np.ceil(cut.num_samples / stride))
        t = targets(cut, n)
        assert len(t.log_f0) == n and targets(cut, n + 3).voiced[-3:].sum() == 0  # padded frames: unvoiced
        times = (np.arange(n) + 0.5) * stride / SR
        in_first = (times > 0.15) & (times < 0.95)
        in_gap = (times > 0.1) & (times < 1.1) & ~in_first
        assert t.voiced[in_first].all() and not t.voiced[(times > 1.02) & (times < 1.08)].any()
        assert in_gap.any()
        # Utterance 0: base 95 Hz (± 5 %) rising 0.4 octave/s from 0.1 s.
        expected = np.log2(BASE_F0[0]) + 0.4 * (times[in_first] - 0.1)
        assert np.abs(t.log_f0[in_first] - expected).max() < np.log2(1.06)
    # Cached per cut: the second call does not recompute.
    assert targets(cut, n) is not None and len(targets._cache) == 1


def test_shift_left_and_causal_head() -> None:
    values = torch.arange(6.0)[None]
    mask = torch.ones(1, 6, dtype=torch.bool)
    shifted, valid = shift_left(values, mask, 2)
    assert shifted.tolist() == [[2, 3, 4, 5, 0, 0]] and valid.tolist() == [[True] * 4 + [False] * 2]
    assert not shift_left(values, mask, 6)[1].any()
    assert horizon_name(0.12) == "120ms" and horizon_name(1.0) == "1000ms"
    head = CausalGRU(5, 8, 16)
    x = torch.randn(2, 10, 5)
    y = x.clone()
    y[:, 6:] = torch.randn(2, 4, 5)  # change only the future of frame 5
    lengths = torch.tensor([10, 10])
    assert torch.equal(head(x, lengths)[:, :6], head(y, lengths)[:, :6])
    assert not torch.allclose(head(x, lengths)[:, 6:], head(y, lengths)[:, 6:])
    assert pearson(torch.arange(5.0), 2 * torch.arange(5.0) + 1) == pytest.approx(1.0)
    assert pearson(torch.ones(4), torch.arange(4.0)) == 0.0


def test_prosody_beats_the_mean_predictor(results: dict) -> None:
    row = results["prosody"]
    for split in ("dev", "test"):
        m = row[split]
        assert m["f0_rmse_cents"] < 0.7 * m["f0_rmse_cents_mean_predictor"], m
        assert m["voicing_error"] < 0.15, m
        assert m["energy_corr"] > 0.8, m


def test_prosody_future_beats_the_mean_predictor(results: dict) -> None:
    row = results["prosody_future"]
    for split in ("dev", "test"):
        m = row[split]
        assert set(m) >= {f"f0_mse_{h}" for h in ("120ms", "240ms", "500ms", "1000ms")} | {"f0_mse_mean"}
        assert m["f0_mse_mean"] < 0.8 * m["f0_mse_mean_predictor"], m
        assert m["f0_mse_mean"] == pytest.approx(np.mean([m[f"f0_mse_{h}"]
                                                           for h in ("120ms", "240ms", "500ms", "1000ms")]))


def test_cli_on_espeak_speech_with_two_frame_grids(tmp_path: Path) -> None:
    """Both tasks from `speechrep benchmark` on real eSpeak sentences (micro preset), strides 160 and 320."""
    import json

    from speechrep.cli import main
    from speechrep.data.synth import make_synthetic_corpus

    try:
        make_synthetic_corpus(tmp_path / "corpus", preset="micro", subsets=["pr"], num_workers=1)
    except (ImportError, OSError) as err:  # no eSpeak NG library on this machine
        pytest.skip(f"eSpeak NG unavailable: {err}")
    out = tmp_path / "bench"
    code = main(["benchmark", "--corpus", str(tmp_path / "corpus"), "--out", str(out), "--upstream", "fbank",
                 "--upstream", "hubert_tiny@random", "--tasks", "prosody,prosody_future", "--preset", "tiny",
                 "train.max_steps=10", "train.eval_every=10"])
    assert code in (0, None)
    summary = json.loads((out / "results.json").read_text())
    rows = summary["rows"] if isinstance(summary, dict) else summary
    assert {(r["upstream"], r["task"]) for r in rows} == {(u, t) for u in ("fbank", "hubert_tiny@random")
                                                          for t in ("prosody", "prosody_future")}
    for row in rows:
        m = row["test"]
        if row["task"] == "prosody":
            # 2 train utterances: unseen test voices can sit more than an octave (1200 cents) from their mean.
            assert 100 < m["f0_rmse_cents_mean_predictor"] < 2400 and np.isfinite(m["f0_rmse_cents"])
            assert 0.0 <= m["voicing_error"] < 0.5 and -1.0 <= m["energy_corr"] <= 1.0
        else:
            assert all(np.isfinite(v) and v >= 0 for v in m.values())

"""The shared pre-training frame, through its reference method (APC): data → loop → export → hub, CLI, resume."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording

from speechrep.cli import main
from speechrep.errors import ConfigError
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.common import PretrainData, load_unlabeled
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


def _voiced(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A speech-like signal: harmonic stack with a gliding pitch and syllable-rate amplitude modulation."""
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.1 * wav + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "unlabeled" / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("dev", 4)):
        recs = []
        for i in range(n):
            path = root / "unlabeled" / "audio" / f"{split}{i}.flac"
            sf.write(path, _voiced(rng, rng.uniform(1.5, 3.0)), 16000)
            recs.append(Recording.from_file(path, recording_id=f"{split}{i}"))
        CutSet.from_manifests(recordings=recs).to_file(root / "unlabeled" / f"{split}.jsonl.gz")
    return root


def test_presets_layer_on_the_method_file() -> None:
    cfg = method_config("apc", "tiny", ["train.max_steps=7", "model.n_future=2"])
    assert cfg.model == {"hidden_size": 128, "num_layers": 2, "dropout": 0.0, "n_future": 2}
    assert (cfg.train.max_steps, cfg.train.clip_norm) == (7, 5.0)  # clip_norm from apc.yaml, steps overridden
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        method_config("apc", "huge")
    with pytest.raises(ConfigError, match="unknown pre-training method"):
        method_config("nope")


def test_manifest_without_dev_split_holds_out_a_stable_share(corpus: Path) -> None:
    train, dev = load_unlabeled(corpus / "unlabeled" / "train.jsonl.gz", PretrainData(dev_fraction=0.25))
    assert len(dev) == 6 and not set(train.ids) & set(dev.ids)
    again = load_unlabeled(corpus / "unlabeled" / "train.jsonl.gz", PretrainData(dev_fraction=0.25))[1]
    assert sorted(dev.ids) == sorted(again.ids)


class _Killed(Exception):
    pass


def test_apc_trains_exports_and_resumes_exactly(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    args = ["model.hidden_size=32", "train.max_steps=40", "train.eval_every=20", "train.log_every=5",
            "data.max_duration=8.0"]
    full = run_method("apc", corpus, tmp_path / "full", "tiny", args)
    losses = [m["loss"] for m in read_metrics(tmp_path / "full", "train")]
    assert np.mean(losses[-2:]) < 0.95 * np.mean(losses[:2])  # the loss falls (L1 on CMVN log-mel, from ~0.85)
    upstream = load_upstream(full)
    assert upstream.stride == 160 and len(upstream.hidden_sizes) == 2
    out = upstream(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    assert [h.shape[-1] for h in out.hidden_states] == [32, 32] and out.lengths.tolist() == [48, 36]

    # Kill the run at step 27 (last checkpoint: step 20), start the same command again: the same final weights.
    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_at_27(*a, **kw):
        def after_step(model, step):
            if step == 27:
                raise _Killed
        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_at_27)
    with pytest.raises(_Killed):
        run_method("apc", corpus, tmp_path / "split", "tiny", args)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("apc", corpus, tmp_path / "split", "tiny", args)
    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_pretrain_runs_and_reports_user_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(["pretrain", "--method", "apc", "--data", str(corpus), "--out", str(tmp_path / "run"),
                 "--preset", "tiny", "model.hidden_size=16", "train.max_steps=3", "train.eval_every=3"]) == 0
    assert "exported upstream" in capsys.readouterr().out
    assert (tmp_path / "run" / "upstream" / "model.safetensors").is_file()
    assert main(["pretrain", "--method", "apc", "--data", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x"), "--preset", "tiny"]) == 2
    assert "no such manifest" in capsys.readouterr().err

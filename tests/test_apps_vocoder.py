"""Vocoders: shapes, determinism, the loss falls, a killed run resumes to the same weights, synthesis and
the command's one-line errors, on the tiny parallel corpus of the synthetic speakers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from apps_corpus import parallel_corpus

from speechrep.apps.vocoder import Vocoder, VocoderConfig
from speechrep.apps.vocoder_train import load_vocoder, train_vocoder, vocoder_config
from speechrep.audio import load_audio
from speechrep.cli import main
from speechrep.train import read_checkpoint, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["subset=vc_pool", "max_train_utterances=24", "train.log_every=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parallel_corpus(tmp_path_factory.mktemp("parallel"))


def test_vocoder_shapes_and_determinism() -> None:
    torch.manual_seed(0)
    for kind, hop in (("vocos", 160), ("vocos", 320), ("mel_gl", 320)):
        cfg = VocoderConfig(kind=kind, dim=16, intermediate=32, num_blocks=1)
        model = Vocoder(cfg, in_size=12, hop=hop).eval()
        features = torch.randn(50, 12)
        wave = model.synthesize(features)
        assert wave.shape == (50 * hop,) and torch.isfinite(wave).all()
        assert torch.equal(wave, model.synthesize(features))
        if kind == "mel_gl":
            assert model(features[None]).shape == (1, 50 * hop // 160, 80)


@pytest.mark.parametrize("kind", ["vocos", "mel_gl"])
def test_the_loss_falls_and_the_run_synthesises(corpus: Path, tmp_path: Path, kind: str) -> None:
    extra = ["discriminator=true"] if kind == "vocos" else []
    cfg = vocoder_config("tiny", FAST + [f"kind={kind}", "train.max_steps=40", "train.eval_every=20"] + extra)
    results = train_vocoder(cfg, corpus, tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert len(losses) == 40 and sum(losses[-5:]) < sum(losses[:5])
    evals = read_metrics(tmp_path / "run", "eval")
    assert evals[-1]["mel_l1"] < evals[0]["mel_l1"] * 1.2 and results["steps"] == 40
    vocoder, features = load_vocoder(tmp_path / "run")
    wav, _ = load_audio(next((corpus / "audio").rglob("*.flac")))
    out = vocoder.synthesize(features.features(wav))
    assert abs(len(out) - len(wav)) <= 160 and torch.isfinite(out).all()


class _Killed(Exception):
    """Stands in for a killed job."""


def test_a_killed_run_resumes_to_the_uninterrupted_weights(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = vocoder_config("tiny", FAST + ["train.max_steps=12", "train.eval_every=4", "discriminator=true"])
    train_vocoder(cfg, corpus, tmp_path / "full")

    import speechrep.apps.vocoder_train as vt

    real_train = vt.train

    def killed_at_step_7(*args, **kwargs):
        def after_step(model, step):
            if step == 7:  # the last checkpoint is step 4
                raise _Killed
        return real_train(*args, **kwargs, after_step=after_step)

    monkeypatch.setattr(vt, "train", killed_at_step_7)
    with pytest.raises(_Killed):
        train_vocoder(cfg, corpus, tmp_path / "resumed")
    monkeypatch.setattr(vt, "train", real_train)
    train_vocoder(cfg, corpus, tmp_path / "resumed")
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    resumed = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-6), key


def test_cli_train_synthesize_and_one_line_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["vocoder", "train", "--corpus", str(corpus), "--out", str(run), "--preset", "tiny", *FAST,
                 "train.max_steps=4", "train.eval_every=2"]) == 0
    source = next((corpus / "audio").rglob("*.flac"))
    out = tmp_path / "synth"
    assert main(["vocoder", "synthesize", "--vocoder", str(run), "--out", str(out), str(source)]) == 0
    assert (out / f"{source.stem}.wav").is_file()
    assert main(["vocoder", "synthesize", "--vocoder", "griffin-lim", "--out", str(out), str(source)]) == 0
    capsys.readouterr()
    # another setting in the same run folder, a folder that is no vocoder, a file that is no audio
    bad_text = tmp_path / "bad.wav"
    bad_text.write_text("not audio")
    cases = [
        (["vocoder", "train", "--corpus", str(corpus), "--out", str(run), "--preset", "tiny", *FAST,
          "train.max_steps=5"], 1, "other settings"),
        (["vocoder", "synthesize", "--vocoder", str(tmp_path), "--out", str(out), str(source)], 1,
         "not a vocoder run"),
        (["vocoder", "synthesize", "--vocoder", str(run), "--out", str(out), str(bad_text)], 1, "bad.wav"),
        (["vocoder", "train", "--corpus", str(corpus), "--out", str(tmp_path / "x"), "features=nope"], 2,
         "UPSTREAM:LAYER"),
        (["vocoder", "train", "--corpus", str(corpus), "--out", str(tmp_path / "y"), "subset=missing"], 2,
         "no such manifest"),
    ]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err

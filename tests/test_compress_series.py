"""Compression series with retraining: weight pruning, gradient head importance, shallow students, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from speechrep.cli import main
from speechrep.compress.distill import shallow_student
from speechrep.compress.retrain import SelfDistillation, gradient_head_importance
from speechrep.compress.sparse import magnitude_masks, mask_overlap, masks_of, prunable_weights
from speechrep.compress.structured import prune_heads
from speechrep.data.batching import AudioBatch, audio_batches
from speechrep.data.synth import make_synthetic_corpus
from speechrep.pretrain.common import PretrainData, load_unlabeled
from speechrep.upstream import load_upstream
from speechrep.upstream.extract import load_upstream_flag

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress") / "micro"
    make_synthetic_corpus(root, preset="micro", seed=0, subsets=["unlabeled"], num_workers=1)
    return root


def _model(name: str = "melhubert_tiny") -> nn.Module:
    torch.manual_seed(0)
    return load_upstream(name).eval()


def _batch() -> AudioBatch:
    wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    return AudioBatch(wavs, torch.tensor([16000, 12000]), None)


def _compress(tmp: Path, corpus: Path, *args: str) -> dict:
    out = tmp / "out"
    assert main(["compress", "--upstream", "melhubert_tiny", "--data", str(corpus), "--preset", "tiny",
                 "--out", str(out), *args]) == 0
    return json.loads((out / "compress.json").read_text())


def test_magnitude_masks_keep_the_largest_weights_under_one_global_threshold() -> None:
    model = _model()
    masks = magnitude_masks(model, 0.3)
    weights = prunable_weights(model)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total)
    kept = torch.cat([w.detach().abs()[masks[k]] for k, w in weights.items()])
    dropped = torch.cat([w.detach().abs()[~masks[k]] for k, w in weights.items()])
    assert float(kept.min()) >= float(dropped.max())
    assert mask_overlap(masks, masks) == 1.0
    nested = round(0.1 * total) / round(0.3 * total)
    assert mask_overlap(masks, magnitude_masks(model, 0.1)) == pytest.approx(nested)


def test_prune_series_is_nested_stays_sparse_through_retraining_and_reports_sparse_macs(
        tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "prune", "--keep", "0.6,0.2")
    first, second = report["steps"]
    assert [first["density"], second["density"]] == pytest.approx([0.6, 0.2], abs=1e-3)
    assert second["mask_kept_from_previous"] == pytest.approx(second["density"] / first["density"], abs=1e-3)
    assert second["train"]["steps"] == 4  # retrained
    model = load_upstream(tmp_path / "out" / "keep_0.2")
    masks = masks_of(model)
    assert sum(int(m.sum()) for m in masks.values()) / second["prunable"] == pytest.approx(0.2, abs=1e-3)
    zeros = second["prunable"] - round(0.2 * second["prunable"])
    assert second["nonzero_params"] == second["params"] - zeros
    assert second["sparse_macs_per_second"] == second["macs_per_second"] - second["frames_per_second"] * zeros
    assert second["macs_per_second"] == report["original"]["macs_per_second"]  # dense kernels: no saving
    assert "no speed-up" in report["note"]


def test_retraining_recovers_the_unpruned_states(tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "heads", "--keep", "0.5", "steps=12",
                       "train.eval_every=12")
    teacher = load_upstream_flag("melhubert_tiny").eval()  # the command's model: seeded from its name
    batch = next(iter(audio_batches(load_unlabeled(corpus, PretrainData(max_duration=8.0))[1], 8.0)(0)))
    before = SelfDistillation(prune_heads(teacher, 0.5), teacher).loss(batch.wavs, batch.wav_lens)[0]
    after = SelfDistillation(load_upstream(tmp_path / "out" / "keep_0.5").eval(), teacher)
    after_loss = after.loss(batch.wavs, batch.wav_lens)[0]
    assert float(after_loss.detach()) < float(before.detach())
    assert sum(report["steps"][0]["heads"]) == 2


def test_a_head_the_output_ignores_has_zero_gradient_importance() -> None:
    model, teacher = _model(), _model()
    attention = model.encoder.layers[0].attention
    rows = slice(0, attention.head_dim)  # head 0 of layer 0: no value and no output columns
    with torch.no_grad():
        attention.v_proj.weight[rows] = 0.0
        attention.v_proj.bias[rows] = 0.0
        attention.out_proj.weight[:, rows] = 0.0
    scores = gradient_head_importance(model, teacher, [_batch()])
    assert scores[0][0] == 0.0 and bool((scores[0][1:] > 0).all()) and bool((scores[1] > 0).all())
    assert all(p.requires_grad for p in model.parameters())  # measured on a copy: the model is untouched
    again = gradient_head_importance(model, teacher, [_batch()])
    assert all(torch.equal(a, b) for a, b in zip(scores, again))


def test_gradient_importance_series_runs_from_the_command(tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "heads", "--keep", "0.5", "importance=gradient",
                       "steps=0")
    assert report["steps"][0]["importance"] == "gradient" and sum(report["steps"][0]["heads"]) == 2


def test_a_shallow_student_starts_as_the_teachers_first_layers() -> None:
    teacher = _model("hubert_tiny")
    student = shallow_student(teacher, 1)
    batch = _batch()
    with torch.no_grad():
        expected = teacher(batch.wavs, batch.wav_lens).hidden_states[:2]
        got = student(batch.wavs, batch.wav_lens).hidden_states
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(expected, got))


def test_distill_series_trains_shallow_students_and_resumes(tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "distill", "--keep", "1,0.5,0.4")
    assert [len(s["heads"]) for s in report["steps"]] == [2, 1]  # 0.4 rounds to the 1-layer student again
    assert report["steps"][1]["params"] < report["original"]["params"]
    assert report["steps"][1]["macs_per_second"] < report["original"]["macs_per_second"]
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("keep_*/model.safetensors")}
    again = _compress(tmp_path, corpus, "--method", "distill", "--keep", "1,0.5,0.4")
    assert again == report
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("keep_*/model.safetensors")} == written


def test_a_killed_step_is_redone_identically(tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "ffn", "--keep", "0.5")
    step = tmp_path / "out" / "keep_0.5"
    weights = load_upstream(step).state_dict()
    for item in step.iterdir():  # the export was lost; the training run's checkpoints remain
        item.unlink()
    step.rmdir()
    (tmp_path / "out" / "compress.json").unlink()
    again = _compress(tmp_path, corpus, "--method", "ffn", "--keep", "0.5")
    assert again == report
    assert all(torch.equal(weights[k], v) for k, v in load_upstream(step).state_dict().items())


def test_another_config_in_the_same_folder_is_refused(tmp_path: Path, corpus: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _compress(tmp_path, corpus, "--method", "ffn", "--keep", "0.5", "steps=0")
    written = (tmp_path / "out" / "compress.json").read_text()
    code = main(["compress", "--upstream", "melhubert_tiny", "--data", str(corpus), "--preset", "tiny",
                 "--out", str(tmp_path / "out"), "--method", "ffn", "--keep", "0.5"])
    assert code != 0 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "compress.json").read_text() == written


def test_skip_series_replaces_the_most_diagonal_attention_and_retrains(tmp_path: Path, corpus: Path) -> None:
    report = _compress(tmp_path, corpus, "--method", "skip", "--keep", "0.5")
    step = report["steps"][0]
    most_diagonal = max(range(len(step["diagonality"])), key=lambda i: step["diagonality"][i])
    assert step["skipped"] == [most_diagonal] and step["train"]["steps"] == 4
    assert step["macs_per_second"] < report["original"]["macs_per_second"]
    model = load_upstream(tmp_path / "out" / "keep_0.5")
    assert model.config.identity_attention == (most_diagonal,)


def test_the_command_refuses_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    code = main(["compress", "--method", "ffn", "--upstream", "melhubert_tiny", "--out", str(out)])
    assert code != 0 and "without torchrun" in capsys.readouterr().err
    assert not out.exists()

"""The shared training loop: schedules, exact resume, best checkpoint by dev metric, grad accumulation, run dir."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from speechrep.config import load_config
from speechrep.errors import CheckpointError, ConfigError, SpeechrepError
from speechrep.train import (TrainConfig, load_checkpoint, lr_factor, prepare_run_dir, read_checkpoint,
                             read_metrics, train, write_results)

X = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
Y = (X @ torch.randn(6, 1, generator=torch.Generator().manual_seed(1))).squeeze(1)


def toy_model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def make_batches(batch_size: int):
    """10 batches of 4 per epoch (for batch_size 4), shuffled by an epoch-seeded generator."""
    def batches(epoch: int):
        order = torch.randperm(len(X), generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            yield {"x": X[idx], "y": Y[idx]}
    return batches


def noisy_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE plus noise from python, numpy and torch RNGs, so resume must restore all three exactly."""
    pred = model(batch["x"]).squeeze(1)
    jitter = random.random() * 1e-3 + float(np.random.rand()) * 1e-3
    loss = ((pred - batch["y"]) ** 2).mean() * (1 + jitter) + 1e-3 * torch.randn(()).abs()
    return loss, {"mae": (pred - batch["y"]).abs().mean().item()}


def mse_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()


def dev_loss(model: nn.Module) -> dict[str, float]:
    return {"loss": ((model(X[:8]).squeeze(1) - Y[:8]) ** 2).mean().item()}


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=12, lr=1e-2, warmup_steps=3, schedule="cosine", grad_accum=2, clip_norm=0.5,
                eval_every=5, log_every=2, device="cpu", weight_decay=0.01)
    return TrainConfig(**{**base, **kw})


class Stop(Exception):
    pass


def test_lr_schedules():
    assert lr_factor(0, 12, 4, "linear") == pytest.approx(0.25)
    assert lr_factor(3, 12, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(4, 12, 4, "linear") == pytest.approx(1.0)
    assert lr_factor(8, 12, 4, "linear") == pytest.approx(0.5)
    assert lr_factor(8, 12, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(6, 12, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(11, 12, 4, "linear") == pytest.approx(1 / 8)
    assert lr_factor(100, 12, 4, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 10, 0, "step")


def test_logged_lr_follows_schedule(tmp_path: Path):
    train(toy_model(), make_batches(4), mse_loss, cfg(log_every=1, schedule="linear"), tmp_path)
    lrs = [row["lr"] for row in read_metrics(tmp_path, "train")]
    assert lrs == pytest.approx([1e-2 * lr_factor(s, 12, 3, "linear") for s in range(12)])


@pytest.mark.parametrize("eval_every,saved_position", [(5, (5, 0, 10)), (4, (4, 0, 8))])
def test_resume_after_kill_is_bit_identical(tmp_path: Path, eval_every: int, saved_position: tuple):
    full_model = toy_model(dropout=0.2)
    full = train(full_model, make_batches(4), noisy_loss, cfg(eval_every=eval_every), tmp_path / "full",
                 evaluate=dev_loss)

    def kill_at_7(model: nn.Module, step: int) -> None:
        if step == 7:
            raise Stop
    with pytest.raises(Stop):
        train(toy_model(dropout=0.2), make_batches(4), noisy_loss, cfg(eval_every=eval_every), tmp_path / "cut",
              evaluate=dev_loss, after_step=kill_at_7)
    # Killed after step 7; last.pt is from step 5 (exactly at the end of epoch 0: 10 batches of 4) or from
    # step 4 (in the middle of epoch 0).
    saved = read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == saved_position
    resumed_model = toy_model(dropout=0.2)
    resumed = train(resumed_model, make_batches(4), noisy_loss, cfg(eval_every=eval_every), tmp_path / "cut",
                    evaluate=dev_loss)

    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed == full and resumed.step == 12 and resumed.epoch == 2
    # metrics.jsonl of the resumed run equals the uninterrupted one: rows written after step 5 were replaced.
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "full")
    assert [r["step"] for r in read_metrics(tmp_path / "full", "eval")] == [*range(eval_every, 12, eval_every), 12]
    assert all("mae" in r and "grad_norm" in r for r in read_metrics(tmp_path / "full", "train"))

    # A finished run started again returns at once, with the trained weights loaded.
    def never(model: nn.Module, step: int) -> None:
        raise AssertionError("a finished run must not train again")
    again_model = toy_model(dropout=0.2)
    again = train(again_model, make_batches(4), noisy_loss, cfg(eval_every=eval_every), tmp_path / "cut",
                  evaluate=dev_loss, after_step=never)
    assert again.step == 12
    assert torch.equal(again_model[0].weight, full_model[0].weight)


@pytest.mark.parametrize("mode,best_index", [("min", 1), ("max", 2)])
def test_best_checkpoint_follows_dev_metric(tmp_path: Path, mode: str, best_index: int):
    scripted = iter([0.5, 0.2, 0.9, 0.4])
    snapshots: dict[int, torch.Tensor] = {}

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"loss": 1.0, "acc": next(scripted)}

    def snapshot(model: nn.Module, step: int) -> None:
        snapshots[step] = model[0].weight.detach().clone()

    state = train(toy_model(), make_batches(4), mse_loss, cfg(max_steps=8, eval_every=2, metric="acc",
                                                              metric_mode=mode), tmp_path, evaluate=evaluate,
                  after_step=snapshot)
    best_step = [2, 4, 6, 8][best_index]
    assert (state.best_step, state.best_metric) == (best_step, [0.5, 0.2, 0.9, 0.4][best_index])
    best_model = toy_model()
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt", best_model)
    assert best["step"] == best_step
    assert torch.equal(best_model[0].weight, snapshots[best_step])
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8


def test_unknown_metric_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="'wer'.*loss"):
        train(toy_model(), make_batches(4), mse_loss, cfg(metric="wer"), tmp_path, evaluate=dev_loss)


def test_grad_accumulation_matches_full_batch(tmp_path: Path):
    accumulated, whole = toy_model(), toy_model()
    train(accumulated, make_batches(4), mse_loss, cfg(grad_accum=2, clip_norm=1e-3), tmp_path / "a")
    train(whole, make_batches(8), mse_loss, cfg(grad_accum=1, clip_norm=1e-3), tmp_path / "b")
    moved = (whole[0].weight - toy_model()[0].weight).abs().max()
    assert moved > 1e-3  # clipping and decay are active, so the comparison is not trivially equal
    for a, b in zip(accumulated.parameters(), whole.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in read_metrics(tmp_path / "a", "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "b", "train")], rel=1e-5)


def test_param_groups_with_their_own_lr(tmp_path: Path):
    model = toy_model()
    first_before, last_before = model[0].weight.detach().clone(), model[3].weight.detach().clone()
    groups = [{"params": model[0].parameters(), "lr": 1e-9}, {"params": model[3].parameters()}]
    train(model, make_batches(4), mse_loss, cfg(weight_decay=0.0), tmp_path, param_groups=groups)
    assert (model[0].weight - first_before).abs().max() < 1e-7
    assert (model[3].weight - last_before).abs().max() > 1e-3


def test_non_finite_loss_stops_the_run(tmp_path: Path):
    def nan_loss(model: nn.Module, batch: dict) -> torch.Tensor:
        return mse_loss(model, batch) * float("nan")
    with pytest.raises(FloatingPointError, match="step 1"):
        train(toy_model(), make_batches(4), nan_loss, cfg(), tmp_path / "nan_loss")

    def nan_gradient(model: nn.Module, batch: dict) -> torch.Tensor:
        # sqrt at 0 is finite but its derivative is not: a finite loss with NaN gradients.
        return mse_loss(model, batch) + 0.0 * (model[0].weight * 0).sqrt().sum()
    with pytest.raises(FloatingPointError, match="step 1") as caught:
        train(toy_model(), make_batches(4), nan_gradient, cfg(), tmp_path / "nan_grad")
    assert isinstance(caught.value, SpeechrepError)  # the CLI prints it as one line, exit code 1


def test_epoch_with_changing_length_is_detected_on_resume(tmp_path: Path):
    def kill_at_3(model: nn.Module, step: int) -> None:
        if step == 3:
            raise Stop
    with pytest.raises(Stop):
        train(toy_model(), make_batches(4), mse_loss, cfg(eval_every=2), tmp_path, after_step=kill_at_3)
    with pytest.raises(RuntimeError, match="same on every call"):
        train(toy_model(), lambda epoch: iter([{"x": X[:4], "y": Y[:4]}]), mse_loss, cfg(eval_every=2), tmp_path)


@dataclass
class Recipe:
    name: str = "toy"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(seed=7))


def test_run_dir_config_results_and_checkpoint_errors(tmp_path: Path):
    recipe = load_config(Recipe, None, ["train.lr=3e-4", "train.betas=[0.8, 0.95]"])
    prepare_run_dir(tmp_path, recipe)
    text = (tmp_path / "config.yaml").read_text()
    assert "provenance" in text and "torch:" in text and "lhotse:" in text
    assert load_config(Recipe, tmp_path / "config.yaml") == recipe  # provenance is ignored on load
    from speechrep.config import parse_yaml
    assert parse_yaml(text)["provenance"]["seed"] == 7

    path = write_results(tmp_path, {"acc": np.float32(0.5), "n": 3})
    assert json.loads(path.read_text()) == {"acc": 0.5, "n": 3}
    assert not list(tmp_path.glob(".*.tmp"))

    torch.save({"model": nn.Linear(3, 3).state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="wrong.pt.*do not fit"):
        load_checkpoint(tmp_path / "wrong.pt", toy_model())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt", toy_model())
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_train_config_validation():
    with pytest.raises(ConfigError, match="grad_accum"):
        load_config(TrainConfig, None, ["grad_accum=0"])
    with pytest.raises(ConfigError, match="amp"):
        load_config(TrainConfig, None, ["amp=fp16"])


def test_rows_of_a_run_killed_before_its_first_checkpoint_are_dropped(tmp_path: Path):
    def kill_at_3(model: nn.Module, step: int) -> None:
        if step == 3:
            raise Stop
    with pytest.raises(Stop):
        train(toy_model(), make_batches(4), mse_loss, cfg(log_every=1), tmp_path, after_step=kill_at_3)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    train(toy_model(), make_batches(4), mse_loss, cfg(log_every=1, max_steps=4), tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path, "train")] == [1, 2, 3, 4]


@pytest.mark.parametrize("amp_on_cpu,dtype", [(False, torch.float32), (True, torch.bfloat16)])
def test_bf16_autocast_on_cpu_only_when_asked(tmp_path: Path, amp_on_cpu: bool, dtype: torch.dtype):
    seen = set()

    def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
        pred = model(batch["x"]).squeeze(1)
        seen.add(pred.dtype)
        return ((pred.float() - batch["y"]) ** 2).mean()
    model = toy_model()
    train(model, make_batches(4), loss_fn, cfg(amp="bf16", amp_on_cpu=amp_on_cpu, max_steps=2), tmp_path)
    assert seen == {dtype}
    assert model[0].weight.dtype == torch.float32  # autocast never changes the stored weights


def _checkpoint_writes(tmp_path: Path) -> list[str]:
    """The names of the checkpoint files an uninterrupted run writes, in order."""
    import speechrep.train.loop as loop

    written: list[str] = []
    real = loop.save_checkpoint
    loop.save_checkpoint = lambda ckpt, path: (written.append(Path(path).name), real(ckpt, path))[1]
    try:
        train(toy_model(dropout=0.2), make_batches(4), noisy_loss, cfg(eval_every=4), tmp_path, evaluate=dev_loss)
    finally:
        loop.save_checkpoint = real
    return written


@pytest.mark.parametrize("phase", ["while writing", "after writing"])
def test_a_kill_at_any_checkpoint_write_resumes_consistently(tmp_path: Path, monkeypatch, phase: str):
    import speechrep.train.loop as loop
    from speechrep.storage import TEMP_PREFIX

    writes = _checkpoint_writes(tmp_path / "full")
    assert "best.pt" in writes and writes.index("last.pt") < writes.index("best.pt")
    full = {name: read_checkpoint(tmp_path / "full" / "checkpoints" / name) for name in ("last.pt", "best.pt")}
    real = loop.save_checkpoint
    for k, name in enumerate(writes):
        calls = iter(range(len(writes)))

        def killed(ckpt: dict, path: Path) -> None:
            if next(calls) != k:
                return real(ckpt, path)
            if phase == "while writing":  # what kill -9 leaves: a half-written temporary, no rename
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                (Path(path).parent / f"{TEMP_PREFIX}dead-{Path(path).name}").write_bytes(b"half a checkpoint")
                (run / f"{TEMP_PREFIX}dead-results.json").write_text("{")  # and one of another writer
            else:
                real(ckpt, path)
            raise (KeyboardInterrupt if k % 2 else SystemExit)

        run = tmp_path / f"kill{k}"
        monkeypatch.setattr(loop, "save_checkpoint", killed)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            train(toy_model(dropout=0.2), make_batches(4), noisy_loss, cfg(eval_every=4), run, evaluate=dev_loss)
        monkeypatch.setattr(loop, "save_checkpoint", real)
        train(toy_model(dropout=0.2), make_batches(4), noisy_loss, cfg(eval_every=4), run, evaluate=dev_loss)

        assert not list(run.rglob(f"{TEMP_PREFIX}*")), f"kill at write {k} ({name})"
        last, best = (read_checkpoint(run / "checkpoints" / n) for n in ("last.pt", "best.pt"))
        assert best["step"] == last["best_step"], f"kill at write {k} ({name})"
        for mine, theirs in ((last, full["last.pt"]), (best, full["best.pt"])):
            assert (mine["step"], mine["best_step"], mine["best_metric"]) == \
                   (theirs["step"], theirs["best_step"], theirs["best_metric"])
            assert all(torch.equal(mine["model"][p], theirs["model"][p]) for p in theirs["model"])
        assert read_metrics(run) == read_metrics(tmp_path / "full")


def test_a_best_checkpoint_that_cannot_be_reconciled_is_a_checkpoint_error(tmp_path: Path):
    scripted = iter([0.2, 0.5])  # best at step 4, last at step 8
    train(toy_model(), make_batches(4), mse_loss, cfg(max_steps=8, eval_every=4), tmp_path,
          evaluate=lambda model: {"loss": next(scripted)})
    best = read_checkpoint(tmp_path / "checkpoints" / "best.pt")
    last = read_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert best["step"] == last["best_step"] == 4 and last["step"] == 8
    torch.save({**best, "step": 3}, tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="holds step 3"):
        train(toy_model(), make_batches(4), mse_loss, cfg(max_steps=12, eval_every=4), tmp_path, evaluate=dev_loss)

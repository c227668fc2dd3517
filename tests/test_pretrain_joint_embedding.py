"""Joint-embedding pre-training (BYOL-A, Barlow Twins, VICReg, DeLoRes-S): the losses against the papers'
pseudo-code, BYOL's loss and EMA target, the collapse monitors, the log-mel views, and each `tiny` preset
training, exporting and loading."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechrep.data.synth import make_synthetic_corpus
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.byol_a import BYOLAObjective, target_decay
from speechrep.pretrain.joint_embedding import (
    CollapseMonitor,
    LogMelViews,
    ViewConfig,
    barlow_twins_loss,
    byol_loss,
    collapse_statistics,
    random_resize_crop,
    vicreg_loss,
)
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


def _embeddings(n: int = 32, d: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated float64 batches with dimensions of different scales (some under the variance target)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + 0.5
    b = 0.7 * a + 0.4 * torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    return a, b


def _off_diagonal_mask(d: int) -> torch.Tensor:
    return ~torch.eye(d, dtype=torch.bool)


def test_barlow_twins_loss_is_the_papers_algorithm() -> None:
    z_a, z_b = _embeddings()
    lambd = 5e-3
    # Zbontar et al. 2021, Algorithm 1, transcribed
    N, D = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)
    z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0)
    c = torch.mm(z_a_norm.T, z_b_norm) / N
    c_diff = (c - torch.eye(D, dtype=c.dtype)).pow(2)
    c_diff[_off_diagonal_mask(D)] *= lambd
    expected = c_diff.sum()
    got = barlow_twins_loss(z_a, z_b, lambd)
    assert abs(float(got) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    # identical, decorrelated, standardised views: the loss is 0
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(64, 8, dtype=torch.float64, generator=gen))
    white = (q - q.mean(0)) / (q - q.mean(0)).std(0)
    assert float(barlow_twins_loss(white, white)) < 0.05


def test_vicreg_loss_is_the_papers_algorithm() -> None:
    z_a, z_b = _embeddings(seed=2)
    lambda_, mu, nu = 25.0, 25.0, 1.0
    # Bardes et al. 2022, Algorithm 1, transcribed
    N, D = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
    std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
    std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_z_a = (z_a.T @ z_a) / (N - 1)
    cov_z_b = (z_b.T @ z_b) / (N - 1)
    off = _off_diagonal_mask(D)
    cov_loss = cov_z_a[off].pow(2).sum() / D + cov_z_b[off].pow(2).sum() / D
    expected = lambda_ * sim_loss + mu * std_loss + nu * cov_loss
    a, b = _embeddings(seed=2)
    got, terms = vicreg_loss(a, b, lambda_, mu, nu)
    assert float(std_loss) > 0  # the variance hinge is active on these inputs
    assert abs(float(got) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    for name, value in (("invariance", sim_loss), ("variance", std_loss), ("covariance", cov_loss)):
        assert abs(float(terms[name]) - float(value)) <= 1e-6 * max(1.0, abs(float(value)))


def test_byol_loss_is_two_minus_two_cosine_and_stops_the_target_gradient() -> None:
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 4.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[0.0, 5.0], [7.0, 0.0], [-3.0, -4.0], [1.0, 0.0]], requires_grad=True)
    loss = byol_loss(p, z)
    torch.testing.assert_close(loss, torch.tensor([2.0, 0.0, 4.0, 2 - math.sqrt(2)]))
    assert torch.allclose(loss, (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1))  # ‖p̄ − z̄‖²
    loss.sum().backward()
    assert p.grad is not None and z.grad is None


def _byol_objective() -> BYOLAObjective:
    torch.manual_seed(0)
    cfg = method_config("byol_a", "tiny")
    return BYOLAObjective(load_upstream(cfg.upstream, **cfg.model), cfg)


def test_ema_target_moves_towards_the_online_network() -> None:
    objective = _byol_objective()
    online = dict(objective.upstream.named_parameters())
    target = dict(objective.target["encoder"].named_parameters())
    assert all(torch.equal(online[k], target[k]) for k in online)  # starts as a copy
    assert not any(p.requires_grad for p in objective.target.parameters())
    before = {k: v.clone() for k, v in target.items()}
    with torch.no_grad():
        for p in objective.upstream.parameters():
            p.add_(1.0)
        for p in objective.projector.parameters():
            p.mul_(2.0)
    tau = objective.update_target(step=1)
    assert tau == 0.99
    for k, p in target.items():
        torch.testing.assert_close(p, 0.99 * before[k] + 0.01 * online[k])
    proj_online = dict(objective.projector.named_parameters())
    for k, p in objective.target["projector"].named_parameters():
        torch.testing.assert_close(p, 0.99 * (proj_online[k] / 2) + 0.01 * proj_online[k])
    assert target_decay(0, 0.996, 100, "cosine") == pytest.approx(0.996)
    assert target_decay(50, 0.996, 100, "cosine") == pytest.approx(0.998)
    assert target_decay(100, 0.996, 100, "cosine") == pytest.approx(1.0)


def test_collapse_monitor_on_a_collapsed_and_an_isotropic_batch(caplog: pytest.LogCaptureFixture) -> None:
    monitor = CollapseMonitor("emb_")
    collapsed = torch.randn(1, 16).expand(64, 16).clone()
    with caplog.at_level(logging.WARNING):
        stats = monitor(collapsed)
    assert stats["emb_std_mean"] == pytest.approx(0.0, abs=1e-5)
    assert stats["emb_std_min"] == pytest.approx(0.0, abs=1e-5)
    assert stats["emb_eff_rank"] == pytest.approx(1.0, abs=1e-3)
    assert sum("embedding collapse" in r.message for r in caplog.records) == 1
    caplog.clear()
    isotropic = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING):
        stats = CollapseMonitor("emb_")(isotropic)
    assert stats["emb_eff_rank"] > 14.5  # of at most 16
    assert 0.9 < stats["emb_std_mean"] < 1.1 and stats["emb_std_min"] > 0.8
    assert stats["emb_offdiag_corr"] < 0.1
    assert not caplog.records
    # redundant dimensions: correlation 1 off the diagonal, rank 2 for two independent directions
    two = torch.randn(512, 2, generator=torch.Generator().manual_seed(1)) @ torch.randn(2, 16)
    assert 1.5 < collapse_statistics(two)["eff_rank"] < 2.0 + 1e-4


def test_random_resize_crop_of_the_whole_segment_is_the_identity_and_views_differ() -> None:
    x = torch.randn(3, 8, 20)
    whole = ViewConfig(virtual_time=1.0, virtual_freq=1.0, crop_min=1.0, crop_max=1.0)
    torch.testing.assert_close(random_resize_crop(x, whole), x, atol=1e-5, rtol=1e-5)
    cfg = ViewConfig(segment_frames=20, memory_size=4)
    views = LogMelViews(cfg, num_mel_bins=8)
    feats, lengths = torch.randn(3, 30, 8), torch.tensor([30, 25, 12])
    torch.manual_seed(0)
    one, two = views(feats, lengths)
    assert one.shape == two.shape == (3, 8, 20) and not torch.allclose(one, two)
    assert float(one.mean()) == pytest.approx(0.0, abs=1e-5)  # post-normalised over the batch
    assert float(one.std()) == pytest.approx(1.0, abs=1e-4)
    assert int(views.filled) == 3
    views(feats, lengths)  # the ring memory keeps the latest segments, mixup then reads only stored ones
    assert int(views.filled) == 6 and views.memory.abs().sum(dim=(1, 2)).gt(0).all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_corpus(root, preset="micro", seed=0, subsets=["unlabeled"], num_workers=1)
    return root


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg", "byol_a", "delores"])
def test_tiny_preset_trains_without_collapse_exports_and_loads(corpus: Path, tmp_path: Path, method: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="speechrep"):
        out = run_method(method, corpus, tmp_path / "run", "tiny")
    assert not [r.message for r in caplog.records if "collapse" in r.message]
    train = read_metrics(tmp_path / "run", "train")
    losses = [m["loss"] for m in train]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses  # the loss falls (VICReg's by ~20 %)
    for m in train:  # the collapse monitors are logged at every log step
        assert {"emb_std_mean", "emb_std_min", "emb_offdiag_corr", "emb_eff_rank"} <= set(m)
        assert m["emb_std_mean"] > 0.05 and m["emb_eff_rank"] > 1.5
    upstream = load_upstream(out).eval()
    assert upstream.family == "byol_a" and upstream.stride == 1280 and len(upstream.hidden_sizes) == 5
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        hidden = upstream(wav, torch.tensor([16000])).hidden_states
    assert [h.shape[-1] for h in hidden] == upstream.hidden_sizes and hidden[0].shape[1] == 12
    assert float(upstream.feature_std.sub(1).abs().sum()) > 0  # pre-normalisation statistics of the corpus


class _Killed(Exception):
    """Stands in for a killed job."""


def test_killed_byol_a_run_resumes_to_the_same_weights(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """The EMA target and mixup memory are in the checkpoint: a resumed run ends as the uninterrupted one."""
    args = ["train.max_steps=8", "train.eval_every=4", "train.log_every=1"]
    full = run_method("byol_a", corpus, tmp_path / "full", "tiny", args)
    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_after_step_6(*a, **kw):
        inner = kw["after_step"]

        def after_step(model, step):
            inner(model, step)
            if step == 6:  # last checkpoint: step 4
                raise _Killed

        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_after_step_6)
    with pytest.raises(_Killed):
        run_method("byol_a", corpus, tmp_path / "split", "tiny", args)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("byol_a", corpus, tmp_path / "split", "tiny", args)
    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[m["loss"] for m in read_metrics(tmp_path / run, "train") if m["step"] > 4]
              for run in ("full", "split")]
    assert losses[0] == losses[1][-4:]

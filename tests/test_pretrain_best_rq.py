"""BEST-RQ pre-training: the frozen random-projection quantizer on hand-made cases, the target perplexity
monitor, masked code prediction learning, the frozen parts staying frozen, and the export."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_corpus import first_batch, unlabeled_corpus

from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.best_rq import BestRQObjective, RandomProjectionQuantizer, code_perplexity
from speechrep.pretrain.common import set_corpus_statistics
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def test_quantizer_picks_the_codebook_entry_of_highest_cosine() -> None:
    q = RandomProjectionQuantizer(input_dim=2, codebook_size=3, codebook_dim=2, seed=0)
    q.projection.copy_(torch.eye(2)[None])
    q.codebook.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]]]))
    feats = torch.tensor([[[5.0, 1.0], [0.1, 3.0], [-2.0, -2.1], [0.3, -4.0]]])
    assert q(feats)[0, :, 0].tolist() == [0, 1, 2, 2]
    again = RandomProjectionQuantizer(input_dim=8, codebook_size=16, codebook_dim=4, num_codebooks=2, seed=5)
    same = RandomProjectionQuantizer(input_dim=8, codebook_size=16, codebook_dim=4, num_codebooks=2, seed=5)
    assert torch.equal(again.projection, same.projection) and torch.equal(again.codebook, same.codebook)
    assert torch.allclose(again.codebook.norm(dim=-1), torch.ones(2, 16))
    x = torch.randn(1, 50, 8)
    assert again(x).shape == (1, 50, 2) and torch.equal(again(x), again(3.0 * x))  # scale-invariant (cosine)


def test_code_perplexity_counts_effective_codes() -> None:
    assert float(code_perplexity(torch.tensor([0, 1, 2, 3]), 8)) == pytest.approx(4.0)
    assert float(code_perplexity(torch.tensor([5, 5, 5]), 8)) == pytest.approx(1.0)
    assert float(code_perplexity(torch.tensor([[0, 1], [0, 1]]), 8)) == pytest.approx(1.0)  # per codebook


def test_best_rq_learns_frozen_targets_warns_on_collapse_and_exports(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.set_num_threads(1)
    cfg = method_config("best_rq", "tiny")
    torch.manual_seed(0)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = BestRQObjective(upstream, cfg)
    batch = first_batch(corpus)
    # without corpus statistics the log-mels are all positive, project alike and crowd onto few codes
    _, raw = objective(batch)
    set_corpus_statistics(upstream, corpus, cfg)
    frozen = objective.quantizer.projection.clone()
    optimizer = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)  # the same masks every step
        loss, scalars = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert torch.equal(objective.quantizer.projection, frozen)
    # standardised speech spreads over many random codes
    assert scalars["target_perplexity"] > max(10.0, 4 * raw["target_perplexity"])

    silent = type(batch)(torch.full_like(batch.wavs, 1e-3), batch.wav_lens, batch.cuts)
    with caplog.at_level(logging.WARNING, logger="speechrep.pretrain.best_rq"):
        _, flat = BestRQObjective(upstream, cfg)(silent)
    assert flat["target_perplexity"] < cfg.min_perplexity
    assert any("collapsed" in r.getMessage() for r in caplog.records)

    out = run_method(
        "best_rq",
        corpus,
        tmp_path / "run",
        "tiny",
        ["train.max_steps=3", "train.eval_every=3", "data.max_duration=6"],
    )
    assert "target_perplexity" in read_metrics(tmp_path / "run", "train")[-1]
    exported = load_upstream(out)
    assert exported.stride == 640 and len(exported.hidden_sizes) == 5
    assert exported(torch.randn(1, 16000), torch.tensor([16000])).hidden_states[-1].shape == (1, 25, 64)

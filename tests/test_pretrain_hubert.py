"""HuBERT pre-training: cosine cluster logits, utterance mixing, masked prediction learning on real audio,
export, label guard rails, and (slow) the two-iteration pipeline from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_corpus import first_batch, unlabeled_corpus

from speechrep.cli import main
from speechrep.errors import ConfigError
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.hubert import HuBERTObjective, cluster_logits, mix_utterances
from speechrep.pretrain.kmeans import ClusterLabels, run_kmeans
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


def overfit_fixed_masks(objective: torch.nn.Module, batch, steps: int, lr: float) -> list[float]:
    """Adam on one batch, re-seeded before each step so the masks repeat and their labels can be memorised."""
    optimizer = torch.optim.Adam(objective.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        torch.manual_seed(0)
        loss, _ = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def labels(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hubert_labels") / "mfcc"
    run_kmeans("mfcc", corpus, 8, out, seed=0)
    return out


def test_cluster_logits_are_cosine_similarities_over_temperature() -> None:
    projected = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    expected = torch.tensor([[1.0, 0.0, -1.0], [0.5**0.5, 0.5**0.5, -(0.5**0.5)]]) / 0.1
    torch.testing.assert_close(cluster_logits(projected, embeddings, 0.1), expected)


def test_utterance_mixing_adds_one_short_chunk_at_the_asked_energy_ratio() -> None:
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(4000) / 16000
    wavs = torch.zeros(3, 4000)
    lens = torch.tensor([4000, 3000, 2000])
    for i, n in enumerate(lens.tolist()):
        wavs[i, :n] = torch.sin(2 * torch.pi * (200 + 150 * i) * t[:n]) * (0.2 + 0.3 * i)
    mixed = mix_utterances(wavs, lens, prob=1.0, max_ratio=0.5, energy_db=(3.0, 3.0), generator=gen)
    for i, n in enumerate(lens.tolist()):
        added = mixed[i] - wavs[i]
        changed = torch.nonzero(added.abs() > 0).flatten()
        assert len(changed) > 0 and int(changed.max()) < n  # padding untouched
        span = int(changed.max() - changed.min()) + 1
        assert span <= 0.5 * n  # at most half of the primary utterance
        primary_power = wavs[i, :n].square().mean()
        chunk_power = added[changed.min() : changed.max() + 1].square().mean()
        assert float(10 * torch.log10(primary_power / chunk_power)) == pytest.approx(3.0, abs=0.05)
    assert torch.equal(mix_utterances(wavs, lens, prob=0.0), wavs)


def test_masked_cluster_prediction_learns_and_exports(corpus: Path, labels: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = method_config("hubert", "tiny", [f"labels={labels}"])
    torch.manual_seed(0)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = HuBERTObjective(upstream, ClusterLabels(labels), cfg)
    losses = overfit_fixed_masks(objective, first_batch(corpus), steps=40, lr=3e-3)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses  # from ~ln 8 = 2.08

    out = run_method(
        "hubert",
        corpus,
        tmp_path / "run",
        "tiny",
        [
            f"labels={labels}",
            "train.max_steps=4",
            "train.eval_every=4",
            "train.log_every=1",
            "data.max_duration=6",
        ],
    )
    scalars = read_metrics(tmp_path / "run", "train")[-1]
    assert {"masked_acc", "unmasked_acc", "feature_penalty"} <= scalars.keys()
    exported = load_upstream(out)
    assert exported.stride == 320 and len(exported.hidden_sizes) == cfg.model["num_layers"] + 1
    hidden = exported(torch.randn(1, 16000), torch.tensor([16000])).hidden_states
    assert len(hidden) == 5 and hidden[-1].shape == (1, 49, 64)


def test_labels_must_exist_and_match_the_frame_rate(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs k-means labels"):
        run_method("hubert", corpus, tmp_path / "nolabels", "tiny")
    run_kmeans("mfcc", corpus, 4, tmp_path / "10ms", stride=160)
    with pytest.raises(ConfigError, match="labels every 160 samples"):
        run_method("hubert", corpus, tmp_path / "wrongrate", "tiny", [f"labels={tmp_path / '10ms'}"])


def test_small_preset_also_trains_on_unmasked_frames() -> None:
    paper, small = method_config("hubert"), method_config("hubert", "small", ["labels=L1"])
    assert paper.unmasked_weight == 0.0 and small.unmasked_weight == 1.0  # masked-only stays at the prior on CPU
    assert small.model["num_layers"] == 4 and small.train.max_steps == 4000 and small.train.betas == paper.train.betas


@pytest.mark.slow
def test_two_iteration_pipeline_from_the_cli(corpus: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> None:
        assert main(list(args)) == 0

    steps = ["train.max_steps=60", "train.eval_every=30", "data.max_duration=8"]
    cli("kmeans", "--features", "mfcc", "--data", str(corpus), "--k", "8", "--out", str(tmp_path / "L1"))
    cli(
        "pretrain",
        "--method",
        "hubert",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "R1"),
        "--preset",
        "tiny",
        f"labels={tmp_path / 'L1'}",
        *steps,
    )
    cli(
        "kmeans",
        "--features",
        f"{tmp_path / 'R1' / 'upstream'}:2",
        "--data",
        str(corpus),
        "--k",
        "8",
        "--out",
        str(tmp_path / "L2"),
    )
    cli(
        "pretrain",
        "--method",
        "hubert",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "R2"),
        "--preset",
        "tiny",
        f"labels={tmp_path / 'L2'}",
        *steps,
    )
    second = json.loads((tmp_path / "L2" / "kmeans.json").read_text())
    assert second["describe"].endswith("layer 2") and "label_quality" in second["splits"]["train"]
    losses = [m["loss"] for m in read_metrics(tmp_path / "R2", "train")]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert len(load_upstream(tmp_path / "R2" / "upstream").hidden_sizes) == 5

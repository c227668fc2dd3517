"""MelHuBERT pre-training: corpus filterbank statistics, masked cluster prediction on log-mel, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_corpus import first_batch, unlabeled_corpus

from speechrep.audio.features import fbank
from speechrep.data.batching import load_cuts
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.common import fbank_statistics
from speechrep.pretrain.kmeans import ClusterLabels, run_kmeans
from speechrep.pretrain.melhubert import MelHuBERTObjective
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def labels(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("melhubert_labels") / "fbank"
    run_kmeans("fbank", corpus, 8, out, seed=0)
    return out


def test_fbank_statistics_are_the_mean_and_std_over_all_frames(corpus: Path) -> None:
    cuts = load_cuts(corpus, "unlabeled", "train")
    mean, std = fbank_statistics(cuts, 40, "hamming", max_seconds=1e9, max_duration=4.0)
    frames = torch.cat(
        [
            fbank(torch.from_numpy(c.load_audio()).float(), None, num_mel_bins=40, window_type="hamming")[0][
                0
            ]
            for c in cuts
        ]
    )
    torch.testing.assert_close(mean, frames.mean(0), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(std, frames.std(0, unbiased=False), atol=1e-4, rtol=1e-4)


def test_melhubert_learns_masked_clusters_and_exports(corpus: Path, labels: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = method_config("melhubert", "tiny", [f"labels={labels}"])
    torch.manual_seed(0)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = MelHuBERTObjective(upstream, ClusterLabels(labels), cfg)
    batch = first_batch(corpus)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)  # the same masks every step: their labels can be memorised
        loss, scalars = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert 0.05 < scalars["mask_share"] < 0.9

    out = run_method(
        "melhubert",
        corpus,
        tmp_path / "run",
        "tiny",
        [f"labels={labels}", "train.max_steps=3", "train.eval_every=3", "data.max_duration=6"],
    )
    assert "masked_acc" in read_metrics(tmp_path / "run", "train")[-1]
    exported = load_upstream(out)
    assert exported.stride == 320 and len(exported.hidden_sizes) == 5
    assert (
        float(exported.feature_std.min()) > 0 and float(exported.feature_mean.abs().max()) > 0
    )  # stats kept


def test_unmasked_weight_adds_the_unmasked_frames_cross_entropy(corpus: Path, labels: Path) -> None:
    torch.set_num_threads(1)
    batch = first_batch(corpus)
    results = {}
    for weight in (0.0, 0.5):
        cfg = method_config("melhubert", "tiny", [f"labels={labels}", f"unmasked_weight={weight}"])
        torch.manual_seed(0)
        objective = MelHuBERTObjective(load_upstream(cfg.upstream, **cfg.model), ClusterLabels(labels), cfg)
        torch.manual_seed(1)
        results[weight] = objective(batch)
    (masked_only, scalars0), (both, scalars) = results[0.0], results[0.5]
    assert "unmasked_loss" not in scalars0 and scalars["masked_acc"] == scalars0["masked_acc"]
    assert torch.allclose(both, masked_only + 0.5 * scalars["unmasked_loss"], atol=1e-5)


def test_robust_teacher_hears_distorted_audio_against_clean_targets(corpus: Path, labels: Path,
                                                                    tmp_path: Path) -> None:
    torch.set_num_threads(1)
    batch = first_batch(corpus)
    heard = {}
    for name, extra in (("plain", []), ("clean", ["distortions=[clean]"]),
                        ("noise", ["distortions=[noise]", "snr_db=[0.0,0.0]"])):
        cfg = method_config("melhubert", "tiny", [f"labels={labels}", *extra])
        torch.manual_seed(0)
        objective = MelHuBERTObjective(load_upstream(cfg.upstream, **cfg.model), ClusterLabels(labels), cfg)
        seen = []
        features = objective.upstream.input_features
        objective.upstream.input_features = lambda wavs, lens: seen.append(wavs) or features(wavs, lens)
        torch.manual_seed(1)
        heard[name] = (objective(batch)[0], seen[0])
    assert torch.equal(heard["clean"][1], batch.wavs) and torch.equal(heard["plain"][1], batch.wavs)
    noisy = heard["noise"][1]
    assert noisy.shape == batch.wavs.shape and not torch.equal(noisy, batch.wavs)
    valid = batch.wavs != 0
    snr = 10 * torch.log10(batch.wavs[valid].square().sum() / (noisy - batch.wavs)[valid].square().sum())
    assert abs(float(snr)) < 1.5  # 0 dB per utterance
    with pytest.raises(Exception, match="speed changes the frames' timeline"):
        method_config("melhubert", "tiny", [f"labels={labels}", "distortions=[speed]"])

    # continued pre-training from an export keeps its statistics and moves its weights
    args = [f"labels={labels}", "train.max_steps=3", "train.eval_every=3", "data.max_duration=6"]
    first = run_method("melhubert", corpus, tmp_path / "teacher", "tiny", args)
    robust = run_method("melhubert", corpus, tmp_path / "robust", "tiny",
                        [*args, f"upstream={first}", "distortions=[clean,noise,reverb]"])
    before, after = load_upstream(first), load_upstream(robust)
    assert torch.equal(before.feature_mean, after.feature_mean)
    assert torch.equal(before.feature_std, after.feature_std)
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert changed and all("feature_" not in k for k in changed)

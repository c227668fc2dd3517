"""k-means targets and their quality: purity/PNMI formulas on hand-made counts, the labelling step on the
micro corpus, label lookup for windowed cuts, and the label-rate guard rails."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pretrain_corpus import unlabeled_corpus

from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.nn.conv_encoder import conv_output_lengths
from speechrep.pretrain.kmeans import IGNORE, ClusterLabels, parse_features, run_kmeans, stack_frames
from speechrep.pretrain.label_quality import frame_phones, joint_counts, quality_from_counts
from speechrep.upstream.wav2vec2 import BASE_CONV


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def mfcc_labels(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kmeans") / "mfcc"
    run_kmeans("mfcc", corpus, 8, out, seed=0)
    return out


def test_purity_and_pnmi_of_hand_made_counts() -> None:
    counts = np.array([[3, 1, 0], [0, 2, 2]])  # 2 phones x 3 clusters, 8 frames
    q = quality_from_counts(counts)
    assert q.cluster_purity == pytest.approx((3 + 2) / 8)  # each phone's best cluster
    assert q.phone_purity == pytest.approx((3 + 2 + 2) / 8)  # each cluster's best phone
    mutual = 3 / 8 * math.log(2) + 1 / 8 * math.log(2 / 3) + 2 / 8 * math.log(4 / 3) + 2 / 8 * math.log(2)
    assert q.pnmi == pytest.approx(mutual / math.log(2))
    assert (q.frames, q.phones, q.clusters) == (8, 2, 3)
    one_to_one = quality_from_counts(np.diag([5, 3, 2]))
    assert (one_to_one.cluster_purity, one_to_one.phone_purity, one_to_one.pnmi) == pytest.approx((1, 1, 1))
    independent = quality_from_counts(np.outer([1, 3], [2, 2, 4]))
    assert independent.pnmi == pytest.approx(0.0, abs=1e-12)


def test_frame_phones_take_the_phone_at_each_frame_centre() -> None:
    ids: dict[str, int] = {}
    phones = frame_phones([["a", 0.0, 0.04], ["b", 0.04, 0.1]], 6, 0.02, ids)
    names = {v: k for k, v in ids.items()}
    assert [names[i] for i in phones] == ["a", "a", "b", "b", "b", "<sil>"]
    counts = joint_counts(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3)
    assert counts.tolist() == [[0, 0, 2], [1, 0, 0]]


def test_stacked_mfcc_frames_match_the_hubert_cnn_frame_count() -> None:
    samples = torch.arange(400, 60000, 37)
    mfcc_frames = 1 + (samples - 400) // 160
    _, stacked = stack_frames(torch.zeros(len(samples), int(mfcc_frames.max()), 3), mfcc_frames, 2)
    assert torch.equal(stacked, conv_output_lengths(samples, BASE_CONV))
    assert parse_features("runs/it1/upstream:6") == ("runs/it1/upstream", 6)
    assert parse_features("mfcc") == ("mfcc", None)


def test_kmeans_labels_train_and_dev_with_one_dictionary(corpus: Path, mfcc_labels: Path) -> None:
    meta = json.loads((mfcc_labels / "kmeans.json").read_text())
    assert meta["k"] == 8 and meta["stride"] == 320 and set(meta["splits"]) == {"train", "dev"}
    assert 2 <= meta["used_clusters"] <= 8
    centroids = np.load(mfcc_labels / "centroids.npy")
    assert centroids.shape == (8, 78)  # 39 MFCC+Δ+ΔΔ, two 10 ms frames per label
    quality = meta["splits"]["train"]["label_quality"]
    assert 0 < quality["pnmi"] < 1 and 0 < quality["phone_purity"] <= 1
    labels = ClusterLabels(mfcc_labels)
    for split in ("train", "dev"):
        for cut in load_cuts(corpus, "unlabeled", split):
            frames = labels.for_cut(cut)
            expected = int(conv_output_lengths(torch.tensor([cut.num_samples]), BASE_CONV))
            assert len(frames) == expected and frames.max() < 8


def test_window_cuts_find_their_slice_and_rates_are_checked(corpus: Path, mfcc_labels: Path) -> None:
    labels = ClusterLabels(mfcc_labels)
    cut = load_cuts(corpus, "unlabeled", "train")[0]
    windows = list(
        load_cuts(corpus, "unlabeled", "train").subset(cut_ids=[cut.id]).cut_into_windows(duration=0.64)
    )
    second = windows[1]
    assert second.id != cut.id
    full = labels.for_cut(cut)
    np.testing.assert_array_equal(labels.for_cut(second)[:10], full[32:42])  # 0.64 s = 32 frames of 20 ms
    targets = labels.targets([cut], torch.tensor([len(full) + 1]), len(full) + 3)
    assert targets[0, : len(full)].tolist() == full.tolist() and (targets[0, len(full) :] == IGNORE).all()
    with pytest.raises(SpeechrepError, match="label rate"):
        labels.targets([cut], torch.tensor([2 * len(full)]), 2 * len(full))
    with pytest.raises(ConfigError, match="--stride 160"):
        labels.check_stride(160, "tera_base")
    with pytest.raises(SpeechrepError, match="no labels for cut"):
        labels.for_cut(SimpleNamespace(id="nope", recording_id="elsewhere", start=0.0, duration=1.0))


def test_cli_kmeans_on_an_upstream_layer_and_its_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    assert (
        main(
            [
                "kmeans",
                "--features",
                "hubert_tiny:1",
                "--data",
                str(corpus),
                "--k",
                "4",
                "--out",
                str(tmp_path / "layer"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "hubert_tiny layer 1" in out and "PNMI" in out
    assert json.loads((tmp_path / "layer" / "kmeans.json").read_text())["stride"] == 320
    assert (
        main(
            [
                "kmeans",
                "--features",
                "hubert_tiny:9",
                "--data",
                str(corpus),
                "--k",
                "4",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err
    assert (
        main(
            [
                "kmeans",
                "--features",
                "mfcc",
                "--data",
                str(corpus),
                "--k",
                "100000",
                "--out",
                str(tmp_path / "big"),
            ]
        )
        == 2
    )
    assert "--k 100000" in capsys.readouterr().err


def test_cli_kmeans_unknown_upstream_and_unavailable_device_are_one_line(
    corpus: Path, tmp_path: Path, capsys
) -> None:
    argv = ["kmeans", "--data", str(corpus), "--k", "4", "--out", str(tmp_path / "k")]
    assert main([*argv, "--features", "no_such_upstream:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--features no_such_upstream: unknown upstream" in err[0]
    if not torch.cuda.is_available():
        assert main([*argv, "--features", "mfcc", "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--device cuda: no CUDA device is available" in err[0]

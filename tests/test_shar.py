"""Sharded corpora (lhotse Shar): `write_shar` keeps every cut and sample and survives a kill; the stream
gives each rank its own shards, skips without decoding, and pre-training on it equals the corpus directory's
run and resumes exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse.shar import SharWriter
from pretrain_corpus import unlabeled_corpus

import speechrep.data.batching as batching
from speechrep.data.batching import audio_batches, load_cuts
from speechrep.data.shar import INDEX_NAME, open_shar, shard_order, write_shar
from speechrep.errors import SpeechrepError
from speechrep.pretrain import run_method
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream

pytestmark = pytest.mark.usefixtures("one_thread")

# APC tiny on the micro corpus with 5-second batches: several batches per epoch, so a resume lands mid-epoch
APC = ["data.max_duration=5.0", "train.log_every=1", "train.max_steps=6", "train.eval_every=3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def shar(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro `unlabeled` subset in shards of one cut (train: 4 shards)."""
    out = tmp_path_factory.mktemp("shar")
    write_shar(corpus, out, shard_size=1)
    return out


def test_shards_hold_the_same_cuts_and_samples(corpus: Path, shar: Path) -> None:
    for split in ("train", "dev", "test"):
        source = {c.id: c for c in load_cuts(corpus, "unlabeled", split)}
        sharded = open_shar(shar, "unlabeled", split)
        assert sharded.num_cuts == len(source) == len(sharded.shards)
        seen = []
        for cut in sharded.cuts():
            original = source[cut.id]
            assert cut.duration == original.duration
            assert cut.supervisions[0].text == original.supervisions[0].text
            assert cut.supervisions[0].speaker == original.supervisions[0].speaker
            assert np.array_equal(cut.load_audio(), original.load_audio())
            seen.append(cut.id)
        assert sorted(seen) == sorted(source)
    # train is shuffled once before sharding; the other splits keep the manifest's order
    order = [c.id for c in open_shar(shar, "unlabeled", "train").cuts(audio=False)]
    assert order != sorted(order)


def test_a_killed_shard_run_leaves_nothing_complete_and_resumes(corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = SharWriter.write
    written = []

    def killed_in_the_second_train_shard(self: SharWriter, cut) -> None:
        if len(written) == 7:  # dev (2 cuts), test (2), train: 2 + 1 of the next shard written
            raise KeyboardInterrupt
        real_write(self, cut)
        written.append(cut.id)

    monkeypatch.setattr(SharWriter, "write", killed_in_the_second_train_shard)
    with pytest.raises(KeyboardInterrupt):
        write_shar(corpus, tmp_path, subsets=["unlabeled"], shard_size=2)
    monkeypatch.setattr(SharWriter, "write", real_write)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["splits"]["unlabeled/test"]["complete"]
    assert not index["splits"]["unlabeled/train"]["complete"]
    assert len(index["splits"]["unlabeled/train"]["shards"]) == 1  # the half-written one is not named
    assert list((tmp_path / "unlabeled" / "train").glob(".tmp-*"))  # it is left in a temporary folder
    with pytest.raises(SpeechrepError, match="unfinished"):
        open_shar(tmp_path, "unlabeled", "train")

    dev_shard = tmp_path / "unlabeled" / "dev" / "recording.000000.tar"
    mtime = dev_shard.stat().st_mtime_ns
    write_shar(corpus, tmp_path, subsets=["unlabeled"], shard_size=2)
    assert dev_shard.stat().st_mtime_ns == mtime  # finished shards are kept, not rewritten
    train = open_shar(tmp_path, "unlabeled", "train")
    source = load_cuts(corpus, "unlabeled", "train")
    assert sorted(c.id for c in train.cuts(audio=False)) == sorted(source.ids)
    assert not list((tmp_path / "unlabeled" / "train").glob(".tmp-*"))
    with pytest.raises(SpeechrepError, match="other settings"):
        write_shar(corpus, tmp_path, subsets=["unlabeled"], shard_size=3)


def test_each_rank_streams_its_own_shards(shar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = open_shar(shar, "unlabeled", "train")
    epochs = [shard_order(len(split.shards), True, 0, epoch) for epoch in range(4)]
    assert all(sorted(order) == [0, 1, 2, 3] for order in epochs) and len({tuple(o) for o in epochs}) > 1
    everything = {c.id for c in split.cuts(audio=False)}
    for epoch in range(2):
        own = [{c.id for c in split.cuts(epochs[epoch][rank::2], audio=False)} for rank in range(2)]
        assert not own[0] & own[1] and own[0] | own[1] == everything
        for max_duration in (60.0, 3.0):
            ranks = []
            for rank in range(2):
                monkeypatch.setenv("RANK", str(rank))
                monkeypatch.setenv("WORLD_SIZE", "2")
                ranks.append([list(b.cuts.ids) for b in audio_batches(split, max_duration, seed=0)(epoch)])
            assert len(ranks[0]) == len(ranks[1]) > 0  # ranks step together
            got = [{i for batch in r for i in batch} for r in ranks]
            assert got[0] <= own[0] and got[1] <= own[1]
            if max_duration == 60.0:  # one batch per rank holds all its cuts: the union is everything
                assert got == own


def test_skip_moves_on_without_decoding(shar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = open_shar(shar, "unlabeled", "train")
    batches = audio_batches(split, 3.0, seed=0)
    every = list(batches(1))
    assert len(every) >= 3

    def no_decoding(cuts):
        raise AssertionError("skip decoded audio")

    resumed = batches(1)
    monkeypatch.setattr(batching, "collate_audio", no_decoding)
    assert resumed.skip(2) == 2
    monkeypatch.undo()
    rest = list(resumed)
    assert [list(b.cuts.ids) for b in rest] == [list(b.cuts.ids) for b in every[2:]]
    assert all(torch.equal(a.wavs, b.wavs) for a, b in zip(rest, every[2:]))


def test_pretraining_on_shards_equals_the_corpus_directory(corpus: Path, tmp_path: Path) -> None:
    # one shard in the manifest's order: the stream's batches are the directory's, and so are the weights
    write_shar(corpus, tmp_path / "shar", shard_size=100, shuffle=False)
    from_dir = run_method("apc", corpus, tmp_path / "dir", "tiny", APC)
    from_shar = run_method("apc", tmp_path / "shar", tmp_path / "run", "tiny", APC)
    assert [m["loss"] for m in read_metrics(tmp_path / "run", "train")] == \
        [m["loss"] for m in read_metrics(tmp_path / "dir", "train")]
    assert [m["loss"] for m in read_metrics(tmp_path / "run", "eval")] == \
        [m["loss"] for m in read_metrics(tmp_path / "dir", "eval")]
    a, b = load_upstream(from_dir).state_dict(), load_upstream(from_shar).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Killed(Exception):
    """Stands in for a killed job."""


def test_killed_pretraining_on_shards_resumes_to_the_same_weights(shar: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_method("apc", shar, tmp_path / "full", "tiny", APC)

    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_after_step_5(*a, **kw):
        def after_step(model, step):
            if step == 5:  # last checkpoint: step 3, in the middle of an epoch
                raise _Killed

        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_after_step_5)
    with pytest.raises(_Killed):
        run_method("apc", shar, tmp_path / "split", "tiny", APC)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("apc", shar, tmp_path / "split", "tiny", APC)

    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    full_losses = [m["loss"] for m in read_metrics(tmp_path / "full", "train")]
    split_losses = [m["loss"] for m in read_metrics(tmp_path / "split", "train") if m["step"] > 3]
    assert full_losses[3:] == split_losses[-3:]


def test_kmeans_on_shards_labels_like_the_corpus_directory(corpus: Path, shar: Path, tmp_path: Path) -> None:
    from speechrep.pretrain.kmeans import run_kmeans

    run_kmeans("mfcc", corpus, 8, tmp_path / "dir")
    run_kmeans("mfcc", shar, 8, tmp_path / "shar")
    for split in ("train", "dev"):
        a, b = np.load(tmp_path / "dir" / f"{split}.npz"), np.load(tmp_path / "shar" / f"{split}.npz")
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)

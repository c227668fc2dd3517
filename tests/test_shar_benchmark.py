"""The benchmark on a Shar directory (`speechrep shard`): `load_cuts` gives every split the corpus directory's
cuts in its order, audio and Recording fields in memory, side files (trials, truth lists) beside them, and
`speechrep benchmark` there gives the directory's numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lhotse import Recording

from speechrep.analysis.probe import ProbeConfig, probe
from speechrep.data.batching import load_cuts
from speechrep.data.shar import INDEX_NAME, source_order_path, write_shar
from speechrep.data.synth import make_synthetic_corpus
from speechrep.downstream.runner import BenchmarkConfig, benchmark
from speechrep.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SUBSETS = ["ks", "sid", "asv", "qbe", "se"]  # labels, trials and truth files, a Recording field (`clean`)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("micro")
    make_synthetic_corpus(root, preset="micro", seed=0, subsets=SUBSETS, num_workers=1)
    return root


@pytest.fixture(scope="module")
def shar(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 2 cuts: several per train split, which is shuffled before sharding."""
    out = tmp_path_factory.mktemp("shar")
    write_shar(corpus, out, shard_size=2)
    return out


def test_splits_and_side_files_equal_the_directory(corpus: Path, shar: Path) -> None:
    splits = [(subset, m.name[: -len(".jsonl.gz")]) for subset in SUBSETS
              for m in sorted((corpus / subset).glob("*.jsonl.gz"))]
    assert ("qbe", "dev_queries") in splits
    for subset, split in splits:
        source, sharded = load_cuts(corpus, subset, split), load_cuts(shar, subset, split)
        assert list(sharded.ids) == list(source.ids), (subset, split)  # the manifest's order, train too
        for a, b in zip(source, sharded):
            assert b.recording.sources[0].type == "memory"  # nothing read from the source corpus
            assert a.supervisions == b.supervisions and a.duration == b.duration
            assert np.array_equal(a.load_audio(), b.load_audio())
            for name, value in (a.custom or {}).items():
                if isinstance(value, Recording):
                    assert b.custom[name].sources[0].type == "memory"
                    assert np.array_equal(a.load_custom(name), b.load_custom(name)), (subset, name)
                else:
                    assert b.custom[name] == value
    index = json.loads((shar / INDEX_NAME).read_text())
    assert len(index["splits"]["sid/train"]["shards"]) > 1
    assert "clean" in index["splits"]["se/train"]["shards"][0]["audio_fields"]
    for subset in SUBSETS:
        side = [p for p in (corpus / subset).iterdir() if p.is_file() and p.suffix in (".txt", ".json")]
        for path in side:
            assert (shar / subset / path.name).read_bytes() == path.read_bytes()
    assert (shar / "asv" / "test_trials.txt").is_file() and (shar / "qbe" / "test_truth.txt").is_file()


def test_a_shuffled_split_without_its_order_file_is_sorted_by_id(shar: Path, tmp_path: Path) -> None:
    order = source_order_path(shar, "ks", "train")
    kept = order.read_text()
    try:
        order.unlink()  # as an older `speechrep shard` wrote it
        ids = list(load_cuts(shar, "ks", "train").ids)
    finally:
        order.write_text(kept)
    assert ids == sorted(ids)


def test_benchmark_on_shar_equals_the_directory(corpus: Path, shar: Path, tmp_path: Path) -> None:
    def run(root: Path, out: Path) -> None:
        benchmark(BenchmarkConfig(["fbank"], ["ks", "sid"], root, out, preset="tiny"))

    run(corpus, tmp_path / "dir")
    run(shar, tmp_path / "shar")
    for task in ("ks", "sid"):
        a, b = (json.loads((tmp_path / side / "fbank" / task / "results.json").read_text())
                for side in ("dir", "shar"))
        assert a["train_cuts"] == b["train_cuts"] > 0
        assert (a["test"], a["dev"], a["sub_runs"]) == (b["test"], b["dev"], b["sub_runs"])
        losses = [(tmp_path / s / "fbank" / task / "metrics.jsonl").read_text() for s in ("dir", "shar")]
        assert losses[0] == losses[1] and "loss" in losses[0]


def test_probe_on_shar_checks_the_index_for_its_similarity_subset(shar: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{INDEX_NAME}: pr/dev"):  # pr was not sharded
        probe(ProbeConfig(["fbank"], ["ks"], shar, tmp_path / "probe", preset="tiny"))
    assert not (tmp_path / "probe").exists()  # failed before the output folder was made

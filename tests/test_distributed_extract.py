"""Distributed extraction and k-means labelling: parts (`--shard i/n`, torchrun ranks) merge into the output
of one process, bit for bit; finished parts are skipped when run again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_corpus import unlabeled_corpus

from speechrep import load_upstream
from speechrep.cli import main
from speechrep.parts import Part, balance, parse_part, resolve_part
from speechrep.upstream.extract import read_index
from speechrep.upstream.feature_store import FeatureStore
from speechrep.upstream.loading import export_upstream

pytestmark = pytest.mark.usefixtures("one_thread")
FLAGS = ["--layers", "0,2", "--max-batch-seconds", "9", "--shard-mb", "0.05"]  # several batches, shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def audio(corpus: Path) -> Path:
    return corpus / "unlabeled" / "audio"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny", dropout=0.0, attention_dropout=0.0)
    return export_upstream(model, tmp_path_factory.mktemp("model") / "hubert_tiny", {"test": True})


@pytest.fixture(scope="module")
def single(audio: Path, exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "feats"
    assert main(["extract", "--upstream", str(exported), "--out", str(out), *FLAGS, str(audio)]) == 0
    return out


def _same_store(a: Path, b: Path, exact: bool = True) -> None:
    """The same utterances and frames; the same bits, or (after a resume re-batched some) within rounding."""
    index_a, index_b = read_index(a), read_index(b)
    assert sorted(index_a) == sorted(index_b) and len(index_a) == 8
    store_a, store_b = FeatureStore(a), FeatureStore(b)
    for key in index_a:
        assert index_a[key]["frames"] == index_b[key]["frames"]
        for layer in (0, 2):
            x, y = store_a.tensor(key, layer), store_b.tensor(key, layer)
            assert torch.equal(x, y) if exact else torch.allclose(x, y, atol=1e-5), (key, layer)


def test_parts_are_balanced_and_resolved_from_flags_and_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert balance([5, 1, 4, 3, 3], 2) == [[0, 4], [1, 2, 3]]  # 5+3 against 4+3+1, longest first
    assert balance([1.0], 3) == [[0], [], []]
    assert parse_part("1/4") == Part(1, 4) and Part(1, 4).name == "00001-of-00004"
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(Exception, match="--shard"):
            parse_part(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert parse_part("slurm") == Part(2, 3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_part(None) == Part(1, 2) and resolve_part("2/3") == Part(5, 6)


def test_two_parts_merge_into_the_store_of_one_process(
    audio: Path, exported: Path, single: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    base = ["extract", "--upstream", str(exported), "--out", str(out), *FLAGS, str(audio)]
    assert main(base + ["--shard", "1/2"]) == 0
    assert "part 1/2: wrote" in capsys.readouterr().out
    assert read_index(out) == {}  # nothing merged while part 0 is missing
    part1 = read_index(out / "parts" / "00001-of-00002")
    assert 0 < len(part1) < 8
    assert main(base + ["--shard", "0/2"]) == 0
    assert "merged 2 part folder(s)" in capsys.readouterr().out  # the last part to finish merges
    _same_store(single, out)
    assert not list((out / "parts").glob("*/shard-*"))
    done = [json.loads(p.read_text()) for p in sorted((out / "parts").glob("*/done.json"))]
    assert [d["utterances"] for d in done] == [8 - len(part1), len(part1)]
    assert done[0]["plan"] == done[1]["plan"]

    # run again: every utterance of the part is found in the merged store, nothing is computed
    assert main(base + ["--shard", "1/2"]) == 0
    assert f"wrote 0, skipped {len(part1)} already done" in capsys.readouterr().out
    _same_store(single, out)


def test_a_killed_part_resumes_and_a_later_run_merges(
    audio: Path, exported: Path, single: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    base = ["extract", "--upstream", str(exported), "--out", str(out), *FLAGS, str(audio)]
    assert main(base + ["--shard", "0/2"]) == 0
    part0 = out / "parts" / "00000-of-00002"
    (part0 / "done.json").unlink()  # as if killed after its last shard
    first = sorted(part0.glob("shard-*.json"))[0]
    first.unlink()  # ... and before the listing of its first one
    kept = len(read_index(part0))
    assert main(base + ["--shard", "1/2"]) == 0  # part 0 is not done: no merge
    assert read_index(out) == {} and "merged" not in capsys.readouterr().out
    assert main(base + ["--shard", "0/2"]) == 0
    report = capsys.readouterr().out
    assert f"skipped {kept} already done" in report and "merged 2 part folder(s)" in report
    _same_store(single, out, exact=False)  # the lost shard's utterances ran in smaller batches

    # an explicit merge, and a one-process run on the same folder, find nothing left to do
    assert main(["extract", "--out", str(out), "--merge"]) == 0
    assert main(base) == 0
    assert "wrote 0, skipped 8" in capsys.readouterr().out


def test_parts_refuse_overwrite(
    audio: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["extract", "--upstream", str(exported), "--out", str(tmp_path / "f"), "--shard", "0/2",
            "--overwrite", str(audio)]
    assert main(argv) == 2
    assert "--overwrite with --shard" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(
    audio: Path, exported: Path, single: Path, tmp_path: Path
) -> None:
    out = tmp_path / "feats"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
               "-m", "speechrep", "extract", "--upstream", str(exported), "--out", str(out), *FLAGS,
               str(audio)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["00000-of-00002", "00001-of-00002"]
    assert "merged 2 part folder(s)" in result.stdout
    _same_store(single, out)


def _labels(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for split in ("train", "dev"):
        with np.load(folder / f"{split}.npz") as z:
            out[split] = {key: z[key] for key in z.files}
    return out


def test_kmeans_fit_only_then_two_part_apply_equals_one_process(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fitted = tmp_path / "fitted"
    common = ["kmeans", "--data", str(corpus), "--max-duration", "9"]
    assert main(common + ["--features", "mfcc", "--k", "8", "--fit-only", "--out", str(fitted)]) == 0
    assert "label with --apply" in capsys.readouterr().out
    assert json.loads((fitted / "kmeans.json").read_text())["splits"] == {}
    assert not (fitted / "train.npz").exists()
    single, parts = tmp_path / "single", tmp_path / "parts"
    shutil.copytree(fitted, single)
    shutil.copytree(fitted, parts)
    assert main(common + ["--apply", "--out", str(single)]) == 0

    assert main(common + ["--apply", "--out", str(parts), "--shard", "1/2"]) == 0
    assert "labelled part 1/2" in capsys.readouterr().out
    assert not (parts / "train.npz").exists()
    assert main(common + ["--apply", "--out", str(parts), "--shard", "0/2"]) == 0
    assert "clusters used" in capsys.readouterr().out  # the last part merged
    one, merged = _labels(single), _labels(parts)
    for split in one:
        assert one[split].keys() == merged[split].keys()
        for key in one[split]:
            assert np.array_equal(one[split][key], merged[split][key]), (split, key)
    report = lambda folder: json.loads((folder / "kmeans.json").read_text())  # noqa: E731
    assert report(single) == report(parts)
    done = [json.loads(p.read_text()) for p in sorted((parts / "parts").glob("*/done.json"))]
    assert [d["cuts"] for d in done] == [4, 2]  # both parts labelled batches (4 train + 2 dev cuts)
    oneshot = tmp_path / "oneshot"  # fit and label in one call: the same dictionary and, for MFCC, labels
    assert main(common + ["--features", "mfcc", "--k", "8", "--out", str(oneshot)]) == 0
    assert np.array_equal(np.load(oneshot / "centroids.npy"), np.load(fitted / "centroids.npy"))
    assert all(np.array_equal(_labels(oneshot)[s]["labels"], one[s]["labels"]) for s in one)
    assert len(one["train"]["ids"]) == 4 and one["train"]["labels"].dtype == np.uint16

    # a part run again finds its labels written; an explicit merge writes the same files
    (parts / "train.npz").unlink()
    assert main(common + ["--merge", "--out", str(parts)]) == 0
    assert np.array_equal(_labels(parts)["train"]["labels"], one["train"]["labels"])
    assert main(["kmeans", "--data", str(corpus), "--out", str(parts), "--shard", "0/2"]) == 2
    assert "use it with --apply" in capsys.readouterr().err

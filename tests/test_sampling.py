"""One sampler factory (`data.batching.cut_sampler`) behind the pre-training batches and the downstream batches."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from speechrep.data.batching import audio_batches, cut_sampler, load_cuts
from speechrep.downstream.features import _cut_sampler


def _ids(batches) -> list[list[str]]:
    return [[c.id for c in batch] for batch in batches]


def test_both_batchers_draw_the_factorys_batches(corpus: Path) -> None:
    cuts = load_cuts(corpus, "ks", "train")
    for shuffle in (True, False):
        for epoch in (0, 1):
            expected = _ids(cut_sampler(cuts, 2.0, shuffle, seed=7, epoch=epoch))
            assert _ids(_cut_sampler(cuts, 2.0, shuffle, 7, epoch)) == expected
            # audio_batches sorts each batch by duration for collation: the same cuts, batch by batch
            pretrain = [[c.id for c in b.cuts] for b in audio_batches(cuts, 2.0, shuffle=shuffle, seed=7)(epoch)]
            assert [sorted(b) for b in pretrain] == [sorted(b) for b in expected]
    assert _ids(cut_sampler(cuts, 2.0, True, seed=7, epoch=0)) != _ids(cut_sampler(cuts, 2.0, True, seed=7, epoch=1))


def test_ranks_share_the_shuffled_cuts_and_evaluation_sees_all(corpus: Path, monkeypatch) -> None:
    cuts = load_cuts(corpus, "ks", "train")
    shares = [[i for b in cut_sampler(cuts, 2.0, True, seed=1, rank=r, world=2) for i in b.ids] for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) + len(shares[1]) >= 0.9 * len(cuts)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert sorted(i for b in _cut_sampler(cuts, 2.0, False, 0, 0) for i in b.ids) == sorted(cuts.ids)
    assert {i for b in _cut_sampler(cuts, 2.0, True, 1, 0) for i in b.ids} == set(shares[1])


def test_data_never_imports_train() -> None:
    code = ("import sys, speechrep.data.batching, speechrep.data.synth; "
            "print(sorted(m for m in sys.modules if m.startswith('speechrep.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

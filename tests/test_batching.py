"""Audio batching: duration-bounded, padded with correct lengths, deterministic per epoch, sharded by rank."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording

from speechrep.data.batching import audio_batches, load_cuts
from speechrep.errors import SpeechrepError


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    recs = []
    for i in range(30):
        n = int(16000 * rng.uniform(0.3, 1.5))
        sf.write(d / f"u{i}.flac", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        recs.append(Recording.from_file(d / f"u{i}.flac", recording_id=f"u{i}"))
    return CutSet.from_manifests(recordings=recs)


def test_batches_hold_every_cut_once_with_true_lengths(cuts: CutSet) -> None:
    seen = {}
    for batch in audio_batches(cuts, max_duration=4.0, shuffle=True, seed=1)(0):
        assert sum(c.duration for c in batch.cuts) <= 4.0 + 1e-6
        assert batch.wavs.shape == (len(batch.cuts), int(batch.wav_lens.max()))
        for row, cut, n in zip(batch.wavs, batch.cuts, batch.wav_lens):
            assert n == cut.num_samples
            assert torch.allclose(row[:n], torch.from_numpy(cut.load_audio()[0]), atol=1e-6)
            assert torch.all(row[n:] == 0)
            seen[cut.id] = seen.get(cut.id, 0) + 1
    assert seen == {c.id: 1 for c in cuts}


def test_batches_are_deterministic_per_epoch(cuts: CutSet) -> None:
    make = audio_batches(cuts, max_duration=4.0, shuffle=True, seed=3)
    order = lambda epoch: [c.id for b in make(epoch) for c in b.cuts]  # noqa: E731
    assert order(0) == order(0)
    assert order(0) != order(1)


def test_load_cuts_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SpeechrepError, match="no such manifest"):
        load_cuts(tmp_path, "unlabeled")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(SpeechrepError, match="bad.jsonl.gz"):
        load_cuts(bad)

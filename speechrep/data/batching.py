"""Batches of padded audio from lhotse CutSets, sized by total seconds and sharded across DDP ranks.

    from speechrep.data.batching import audio_batches
    batches = audio_batches(cuts, max_duration=60.0, shuffle=True, seed=0)  # epoch -> iterable of AudioBatch
    for batch in batches(epoch):
        out = upstream(batch.wavs, batch.wav_lens)   # batch.cuts carries the labels

`batches(epoch)` is deterministic for a given (cuts, seed, epoch, rank, world size), which is what the training
loop's exact resume relies on.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from lhotse.dataset.sampling import DynamicBucketingSampler, SimpleCutSampler
from lhotse.dataset.sampling.base import CutSampler
from torch import Tensor

from speechrep.errors import SpeechrepError
from speechrep.ranks import rank_and_world


@dataclass
class AudioBatch:
    """Right-padded mono waveforms, their lengths in samples, and the cuts they came from (labels)."""

    wavs: Tensor  # (B, T) float32
    wav_lens: Tensor  # (B,) int64
    cuts: CutSet

    def to(self, device: torch.device | str) -> "AudioBatch":
        """The same batch with its tensors on `device`."""
        return AudioBatch(self.wavs.to(device), self.wav_lens.to(device), self.cuts)

    def __len__(self) -> int:
        return self.wavs.shape[0]


class _CutAudioDataset(torch.utils.data.Dataset):
    """Maps a CutSet mini-batch (from a lhotse sampler) to an AudioBatch; runs inside DataLoader workers."""

    def __getitem__(self, cuts: CutSet) -> AudioBatch:
        cuts = cuts.sort_by_duration(ascending=False)
        wavs, lens = collate_audio(cuts)
        return AudioBatch(wavs.float(), lens.long(), cuts)


def cut_sampler(cuts: CutSet, max_duration: float, shuffle: bool, seed: int = 0, epoch: int = 0,
                rank: int = 0, world: int = 1, drop_last: bool = False) -> CutSampler:
    """Duration-bounded CutSet batches of `rank`'s share, deterministic for (cuts, seed, epoch, rank, world).

    Shuffled batches come from duration buckets (similar lengths together, less padding); ordered ones keep the
    manifest's order.
    """
    if shuffle:
        with warnings.catch_warnings():  # eager CutSets are fine at our sizes; lhotse warns about memory
            warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
            sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=True, seed=seed,
                                              num_buckets=min(10, max(2, len(cuts) // 20)),
                                              drop_last=drop_last, world_size=world, rank=rank)
    else:
        sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False, drop_last=drop_last,
                                   world_size=world, rank=rank)
    sampler.set_epoch(epoch)
    return sampler


def audio_batches(cuts: CutSet, max_duration: float, shuffle: bool = True, seed: int = 0,
                  num_workers: int = 0, drop_last: bool = False) -> Callable[[int], Iterable[AudioBatch]]:
    """A function epoch -> batches of at most `max_duration` seconds of audio, this rank's share only."""
    if max_duration <= 0:
        raise SpeechrepError(f"max_duration must be positive, got {max_duration}")
    rank, world = rank_and_world()
    dataset = _CutAudioDataset()

    def make(epoch: int) -> Iterable[AudioBatch]:
        sampler = cut_sampler(cuts, max_duration, shuffle, seed, epoch, rank, world, drop_last)
        return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers)

    return make


def load_cuts(path: str | Path, subset: str | None = None, split: str = "train") -> CutSet:
    """A CutSet from a manifest file, or from `DIR/<subset>/<split>.jsonl.gz` of a speechrep corpus directory."""
    path = Path(path)
    if path.is_dir():
        if subset is None:
            raise SpeechrepError(f"{path}: a corpus directory needs a subset name (e.g. 'unlabeled')")
        path = path / subset / f"{split}.jsonl.gz"
    if not path.is_file():
        raise SpeechrepError(f"{path}: no such manifest (make one with `speechrep synth` or `speechrep prepare`)")
    try:
        return CutSet.from_file(path).to_eager()
    except Exception as e:  # lhotse raises many types on malformed manifests
        raise SpeechrepError(f"{path}: not a readable lhotse CutSet manifest ({type(e).__name__}: {e})") from e

"""Batches of padded audio from lhotse CutSets, sized by total seconds and sharded across DDP ranks.

    from speechrep.data.batching import audio_batches
    batches = audio_batches(cuts, max_duration=60.0, shuffle=True, seed=0)  # epoch -> iterable of AudioBatch
    for batch in batches(epoch):
        out = upstream(batch.wavs, batch.wav_lens)   # batch.cuts carries the labels

`batches(epoch)` is deterministic for a given (cuts, seed, epoch, rank, world size), which is what the training
loop's exact resume relies on; its `skip(n)` moves past n batches without decoding audio (the loop's resume).
`cuts` may also be a `SharSplit` (speechrep/data/shar.py): such batches streamed from its Shar shards.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from lhotse.dataset.sampling import DynamicBucketingSampler, SimpleCutSampler
from lhotse.dataset.sampling.base import CutSampler
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets
from torch import Tensor

from speechrep.data.shar import SharSplit, is_shar_dir, open_shar, read_index, shard_order, source_order_path
from speechrep.errors import SpeechrepError
from speechrep.ranks import rank_and_world

log = logging.getLogger(__name__)


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


class EpochBatches:
    """One epoch of AudioBatches: a sampler's CutSet batches (at most `limit`), decoded by a DataLoader.

    `skip(n)` runs the sampler alone past the next n batches: nothing is decoded (a Shar stream reads its tar
    bytes, a manifest reads nothing), which is how the training loop resumes mid-epoch cheaply."""

    def __init__(self, sampler: Iterable[CutSet], num_workers: int = 0, limit: int | None = None):
        # islice, not the sampler itself: a lhotse sampler's __iter__ restarts it, and the DataLoader calls it
        self._cuts: Iterator[CutSet] = islice(sampler, limit)
        self._num_workers = num_workers
        self._loader: Iterator[AudioBatch] | None = None
        # A DataLoader iterator draws its workers' base seed from torch's RNG when it is created. Draw it here,
        # where the loader was always created (before the loop's resume restores the RNG), and let the loader
        # draw from a generator of its own later: a resumed run's RNG stays the uninterrupted run's.
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self._generator = torch.Generator().manual_seed(seed)

    def skip(self, count: int) -> int:
        """Move past the next `count` batches without decoding them; returns how many there were."""
        if self._loader is not None:
            raise RuntimeError("EpochBatches.skip must come before the first batch")
        return sum(1 for _ in islice(self._cuts, count))

    def __iter__(self) -> Iterator[AudioBatch]:
        return self

    def __next__(self) -> AudioBatch:
        if self._loader is None:  # the DataLoader draws its CutSets from where skip() left the sampler
            loader = torch.utils.data.DataLoader(_CutAudioDataset(), sampler=self._cuts, batch_size=None,
                                                 num_workers=self._num_workers, generator=self._generator)
            self._loader = iter(loader)
        return next(self._loader)


def audio_batches(cuts: CutSet | SharSplit, max_duration: float, shuffle: bool = True, seed: int = 0,
                  num_workers: int = 0, drop_last: bool = False) -> Callable[[int], EpochBatches]:
    """A function epoch -> batches of at most `max_duration` seconds of audio, this rank's share only."""
    if max_duration <= 0:
        raise SpeechrepError(f"max_duration must be positive, got {max_duration}")
    if isinstance(cuts, SharSplit):
        return _stream_batches(cuts, max_duration, shuffle, seed, num_workers, drop_last)
    rank, world = rank_and_world()

    def make(epoch: int) -> EpochBatches:
        return EpochBatches(cut_sampler(cuts, max_duration, shuffle, seed, epoch, rank, world, drop_last),
                            num_workers)

    return make


STREAM_BUFFER = 2000  # cuts a stream's bucketing sampler holds, their audio bytes in memory (lhotse: 20000)


def _stream_batches(split: SharSplit, max_duration: float, shuffle: bool, seed: int, num_workers: int,
                    drop_last: bool, buffer_size: int = STREAM_BUFFER) -> Callable[[int], EpochBatches]:
    """`audio_batches` of a Shar split, streamed: rank r of W reads every W-th shard of the epoch's order.

    Every rank yields the same number of batches per epoch, the fewest any rank's shards make (counted on the
    cut manifests alone, no audio read), so that DDP ranks step together and the loop's (epoch, batch)
    position means the same on each; the few extra batches of the other ranks are left out of that epoch.
    """
    rank, world = rank_and_world()
    if len(split.shards) < world:
        raise SpeechrepError(f"{split.name}: {len(split.shards)} shards for {world} ranks; every rank needs "
                             "one (write smaller shards with `speechrep shard --shard-size`)")
    bins = None
    if shuffle:  # duration buckets from the manifests: lhotse would draw 10000 cuts (with audio) to find them
        num_buckets = min(10, max(2, split.num_cuts // 20))
        sample = list(islice(split.cuts(audio=False), 10_000))
        bins = estimate_duration_buckets(sample, num_buckets) if len(sample) >= num_buckets else []

    def sampler(shards: list[int], epoch: int, audio: bool) -> CutSampler:
        cuts = split.cuts(shards, audio=audio)
        if shuffle:
            with warnings.catch_warnings():  # a small buffer is the point here; lhotse warns about it
                warnings.filterwarnings("ignore", message=".*buffer_size.*")
                s = DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=True, seed=seed,
                                            duration_bins=bins, buffer_size=buffer_size, drop_last=drop_last,
                                            world_size=1, rank=0)
        else:
            s = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False, drop_last=drop_last,
                                 world_size=1, rank=0)
        s.set_epoch(epoch)
        return s

    counts: dict[int, int] = {}

    def make(epoch: int) -> EpochBatches:
        order = shard_order(len(split.shards), shuffle, seed, epoch)
        if world > 1 and epoch not in counts:
            counts[epoch] = min(sum(1 for _ in sampler(order[r::world], epoch, audio=False))
                                for r in range(world))
        return EpochBatches(sampler(order[rank::world], epoch, audio=True), num_workers, counts.get(epoch))

    return make


def load_cuts(path: str | Path, subset: str | None = None, split: str = "train") -> CutSet:
    """A CutSet from a manifest file, or from `DIR/<subset>/<split>.jsonl.gz` of a speechrep corpus directory,
    or the split `<subset>/<split>` of a Shar directory (`speechrep shard`) read whole: `load_shar_cuts`."""
    path = Path(path)
    if path.is_dir():
        if subset is None:
            raise SpeechrepError(f"{path}: a corpus directory needs a subset name (e.g. 'unlabeled')")
        if is_shar_dir(path):
            return load_shar_cuts(path, subset, split)
        path = path / subset / f"{split}.jsonl.gz"
    if not path.is_file():
        raise SpeechrepError(f"{path}: no such manifest (make one with `speechrep synth` or `speechrep prepare`)")
    try:
        return CutSet.from_file(path).to_eager()
    except Exception as e:  # lhotse raises many types on malformed manifests
        raise SpeechrepError(f"{path}: not a readable lhotse CutSet manifest ({type(e).__name__}: {e})") from e


def load_shar_cuts(root: str | Path, subset: str, split: str) -> CutSet:
    """The split `<subset>/<split>` of a Shar directory as an eager CutSet in the source manifest's order,
    each cut holding its audio (and Recording fields such as `clean`) as encoded bytes in memory, decoded by
    `load_audio`: what `load_cuts` gives for the corpus directory, so a benchmark on either sees the same
    cuts in the same order. The whole split is read once (its FLAC bytes stay in memory: fine for
    SUPERB-sized splits, not for a pre-training corpus, which `audio_batches` streams instead)."""
    cuts = open_shar(root, subset, split).cuts().to_eager()
    order_file = source_order_path(root, subset, split)
    if order_file.is_file():  # a shuffled (train) split: back to the manifest's order
        position = {cut_id: i for i, cut_id in enumerate(order_file.read_text().split())}
        cuts = CutSet.from_cuts(sorted(cuts, key=lambda c: position.get(c.id, len(position))))
    elif read_index(root).get("shuffle") and split == "train":
        log.warning("%s: %s/train has no %s (written by an older `speechrep shard`): cuts sorted by id",
                    root, subset, order_file.name)
        cuts = CutSet.from_cuts(sorted(cuts, key=lambda c: c.id))
    return cuts

"""Sharded corpora in lhotse Shar: a corpus directory's splits written as shards, read back as a stream.

    speechrep shard CORPUS --out SHAR [--subsets unlabeled] [--shard-size 1000]

    from speechrep.data.shar import open_shar
    split = open_shar("SHAR", "unlabeled", "train")    # shards, cut counts and seconds from the index
    cuts = split.cuts()                                 # a lazy CutSet streaming from the tar files

Layout: `SHAR/<subset>/<split>/cuts.NNNNNN.jsonl.gz` with `recording.NNNNNN.tar` (audio as FLAC: lossless
for 16-bit sources; each folder is a plain lhotse Shar directory) and one index, `SHAR/shar_index.json`,
naming every finished shard (its files, cuts, seconds) and every finished split. A shard is written in a
temporary folder and renamed into place before the index names it, and readers go by the index only, so a
killed run leaves nothing that looks complete; the same command again writes only the shards the index does
not name yet. Train splits are shuffled once (seeded) before sharding, as lhotse advises for Shar: source
manifests are often sorted by speaker; `SHAR/<subset>/<split>.order.txt` keeps the manifest's order of the
ids, which `load_cuts` restores. Recording fields of the cuts (SE's `clean`, SS's `source1`/`source2`) are
written as tars of their own (`clean.NNNNNN.tar`), and a subset's other plain files (trials and truth lists,
RTTM, card.json) are copied beside its splits: a benchmark reads the Shar directory alone. Cuts whose audio
cannot be read are skipped and listed in the index.

Reading is a stream (`speechrep.data.batching.audio_batches` takes a `SharSplit` like a CutSet): every
epoch shuffles the shard order with (seed, epoch), DDP rank r of W reads shards r, r+W, ..., and windows and
duration buckets are made on the fly (see `_stream_batches` there for how ranks stay in step).
`load_cuts(SHAR, subset, split)` reads a split whole instead, audio in memory (the benchmark's way).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lhotse import CutSet, Recording
from lhotse.shar import SharWriter
from tqdm import tqdm

from speechrep.errors import SpeechrepError
from speechrep.storage import TEMP_PREFIX, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

INDEX_NAME = "shar_index.json"
FORMAT = "speechrep-shar/1"
AUDIO_FORMAT = "flac"
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


@dataclass(frozen=True)
class Shard:
    """One shard of a split: its cut manifest and audio tar, and what they hold."""

    cuts: Path
    recording: Path
    num_cuts: int
    seconds: float
    audio_fields: tuple[tuple[str, Path], ...] = ()  # (name, tar) of Recording custom fields (`clean`)


@dataclass(frozen=True)
class SharSplit:
    """One split of a Shar directory: its shards in written order and a lazy transform of their cuts."""

    name: str                                             # "<subset>/<split>", for messages
    shards: tuple[Shard, ...]
    transform: Callable[[CutSet], CutSet] | None = None   # e.g. windows, a held-out filter; must stay lazy

    @property
    def num_cuts(self) -> int:
        """Cuts in the shards (before the transform)."""
        return sum(s.num_cuts for s in self.shards)

    @property
    def seconds(self) -> float:
        """Seconds of audio in the shards (before the transform)."""
        return sum(s.seconds for s in self.shards)

    def cuts(self, shards: Sequence[int] | None = None, audio: bool = True) -> CutSet:
        """The transformed cuts of `shards` (indices; default all, in written order) as a lazy CutSet.

        With `audio` each cut carries its audio bytes (read from the tar, decoded only by `load_audio`);
        without, only the manifests are read (durations, ids: what samplers decide on)."""
        chosen = [self.shards[i] for i in (range(len(self.shards)) if shards is None else shards)]
        fields: dict[str, list[str]] = {"cuts": [str(s.cuts) for s in chosen]}
        if audio:
            fields["recording"] = [str(s.recording) for s in chosen]
            for name in dict(chosen[0].audio_fields) if chosen else ():
                fields[name] = [str(dict(s.audio_fields)[name]) for s in chosen]
        cuts = CutSet.from_shar(fields=fields)
        return self.transform(cuts) if self.transform is not None else cuts

    def with_transform(self, fn: Callable[[CutSet], CutSet]) -> SharSplit:
        """The same shards with `fn` applied after the current transform."""
        before = self.transform
        return dataclasses.replace(self, transform=fn if before is None else lambda cuts: fn(before(cuts)))


def shard_order(num_shards: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The shard indices of an epoch: written order, or shuffled by (seed, epoch) alike on every rank."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(f"shar-{seed}-{epoch}").shuffle(order)
    return order


def is_shar_dir(path: str | Path) -> bool:
    """True for a directory written by `write_shar` (it holds the index)."""
    return (Path(path) / INDEX_NAME).is_file()


def read_index(root: str | Path) -> dict[str, Any]:
    """The index of a Shar directory (what `write_shar` has finished)."""
    path = Path(root) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpeechrepError(f"{path}: not a readable Shar index ({type(e).__name__}: {e})") from e
    if index.get("format") != FORMAT:
        raise SpeechrepError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def has_split(root: str | Path, subset: str, split: str) -> bool:
    """True when the index names `subset/split` (finished or not)."""
    return f"{subset}/{split}" in read_index(root)["splits"]


def open_shar(root: str | Path, subset: str, split: str) -> SharSplit:
    """The finished split `subset/split` of the Shar directory `root`."""
    root = Path(root)
    key = f"{subset}/{split}"
    entry = read_index(root)["splits"].get(key)
    if entry is None:
        raise SpeechrepError(f"{root}: no split {key} in {INDEX_NAME} (write it with `speechrep shard`)")
    if not entry["complete"]:
        raise SpeechrepError(f"{root}: split {key} is unfinished ({len(entry['shards'])} shards written); "
                             "run the same `speechrep shard` command again to finish it")
    folder = root / key
    shards = tuple(Shard(folder / s["cuts"], folder / s["recording"], s["num_cuts"], s["seconds"],
                         tuple((k, folder / v) for k, v in s.get("audio_fields", {}).items()))
                   for s in entry["shards"])
    return SharSplit(key, shards)


def write_shar(corpus: str | Path, out: str | Path, subsets: Sequence[str] | None = None,
               shard_size: int = 1000, seed: int = 0, shuffle: bool = True) -> dict[str, Any]:
    """Write every split of `subsets` (default: every subset) of a corpus directory as Shar shards under
    `out`; resumable (shards the index names are kept). Returns the index.

    Train splits are shuffled with `seed` first unless `shuffle` is off (then, like other splits, they keep
    the manifest's order)."""
    from speechrep.data.batching import load_cuts  # batching reads SharSplits: import here, not at the top

    corpus, out = Path(corpus), Path(out)
    if shard_size < 1:
        raise SpeechrepError(f"shard_size must be >= 1, got {shard_size}")
    if not corpus.is_dir():
        raise SpeechrepError(f"{corpus}: not a corpus directory")
    if subsets is None:
        subsets = sorted(d.name for d in corpus.iterdir() if d.is_dir() and any(d.glob("*.jsonl.gz")))
    settings = {"format": FORMAT, "shard_size": shard_size, "seed": seed, "shuffle": shuffle,
                "audio_format": AUDIO_FORMAT}
    fresh = {**settings, "source": str(corpus.resolve()), "splits": {}}
    index = read_index(out) if is_shar_dir(out) else fresh
    changed = [k for k, v in settings.items() if index.get(k) != v]
    if changed:
        raise SpeechrepError(f"{out}: written with other settings ({', '.join(changed)}); use a new --out")
    for subset in subsets:
        manifests = sorted((corpus / subset).glob("*.jsonl.gz"))
        if not manifests:
            raise SpeechrepError(f"{corpus / subset}: no split manifests (<split>.jsonl.gz)")
        _copy_side_files(corpus / subset, out / subset)
        for manifest in manifests:
            split = manifest.name[: -len(".jsonl.gz")]
            _write_split(load_cuts(manifest), out, f"{subset}/{split}", index, shard_size,
                         seed if shuffle and split == "train" else None)
    return index


def _copy_side_files(source: Path, target: Path) -> None:
    """Copy the subset's plain files other than manifests (trials and truth lists, RTTM, card.json) that
    tasks read beside the splits; each is written under a temporary name and renamed into place."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".jsonl.gz"):
            tmp = target / f"{TEMP_PREFIX}{path.name}"
            shutil.copy2(path, tmp)
            os.replace(tmp, target / path.name)


def source_order_path(root: str | Path, subset: str, split: str) -> Path:
    """The cut ids of a shuffled split in the source manifest's order, one a line (what the benchmark
    restores, so that its seeded sampling sees the cuts as a corpus directory gives them)."""
    return Path(root) / subset / f"{split}.order.txt"  # beside the split: in it, lhotse would take a field


def _write_split(cuts: CutSet, out: Path, key: str, index: dict[str, Any], shard_size: int,
                 seed: int | None) -> None:
    """Write the shards of one split that the index does not name yet, recording each as it is finished."""
    entry = index["splits"].setdefault(key, {"num_cuts": len(cuts), "complete": False, "chunks_done": 0,
                                             "shards": [], "failed": []})
    if entry["num_cuts"] != len(cuts):
        raise SpeechrepError(f"{out / key}: the index holds {entry['num_cuts']} cuts of this split, the "
                             f"source now {len(cuts)}; use a new --out")
    if entry["complete"]:
        return
    ordered = list(cuts)
    folder = out / key
    folder.mkdir(parents=True, exist_ok=True)
    if seed is not None:  # from a sorted list, so that the order is the same whatever the manifest's
        atomic_write_text(source_order_path(out, *key.split("/")), "".join(f"{c.id}\n" for c in ordered))
        ordered.sort(key=lambda c: c.id)
        random.Random(seed).shuffle(ordered)
    chunks = [ordered[i:i + shard_size] for i in range(0, len(ordered), shard_size)]
    audio_fields = sorted(k for k, v in (ordered[0].custom or {}).items() if isinstance(v, Recording)) \
        if ordered else []
    done = entry["chunks_done"]
    bar = tqdm(total=len(ordered), initial=sum(len(c) for c in chunks[:done]), desc=f"shard {key}",
               disable=not sys.stderr.isatty())
    for i in range(done, len(chunks)):
        tmp = folder / f"{TEMP_PREFIX}shard-{i:06d}"
        shutil.rmtree(tmp, ignore_errors=True)  # a killed write of this shard
        tmp.mkdir()
        written, seconds, failed = 0, 0.0, []
        fields = {"recording": AUDIO_FORMAT, **{name: AUDIO_FORMAT for name in audio_fields}}
        with SharWriter(str(tmp), fields=fields, shard_size=len(chunks[i]), shard_offset=i) as writer:
            for cut in chunks[i]:
                try:
                    writer.write(cut)  # reads the audio first: a bad file fails before anything is written
                except Exception as e:  # skip-and-report: one unreadable file must not stop a corpus
                    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
                        raise  # our own output failing is not a bad input
                    failed.append({"id": cut.id, "error": f"{type(e).__name__}: {e}"})
                    log.warning("%s: skipped cut %s (%s: %s)", key, cut.id, type(e).__name__, e)
                else:
                    written += 1
                    seconds += cut.duration
                bar.update(1)
        names = {"cuts": f"cuts.{i:06d}.jsonl.gz", "recording": f"recording.{i:06d}.tar"}
        extra = {name: f"{name}.{i:06d}.tar" for name in audio_fields}
        if written:
            for name in [*names.values(), *extra.values()]:
                os.replace(tmp / name, folder / name)
            fields_entry = {"audio_fields": extra} if extra else {}
            entry["shards"].append({**names, **fields_entry, "num_cuts": written,
                                    "seconds": round(seconds, 4)})
        shutil.rmtree(tmp)
        entry["failed"].extend(failed)
        entry["chunks_done"] = i + 1
        atomic_write_json(out / INDEX_NAME, index)  # only now is the shard part of the corpus
    bar.close()
    entry["complete"] = True
    atomic_write_json(out / INDEX_NAME, index)
    log.info("%s: %d shards, %d cuts, %d failed", key, len(entry["shards"]), sum(s["num_cuts"] for s in
                                                                                 entry["shards"]),
             len(entry["failed"]))

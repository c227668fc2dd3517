"""Extract an upstream's hidden states for a corpus into a feature store (`speechrep.upstream.feature_store`).

    from speechrep.upstream.extract import extract_features, load_features
    summary = extract_features(upstream, ["wavs/", "more.flac", "cuts.jsonl.gz"], "feats/", layers=[6, 12])
    feats = load_features("feats/", "spk1/utt1")  # {6: (T', H), 12: (T', H)}

Inputs are audio files, folders (searched recursively for audio suffixes) and lhotse manifests (CutSet or
RecordingSet). Utterance ids are paths relative to their folder without the suffix, a file's stem, or the
cut id (a manifest's entries also record the cut key, so the benchmark finds them by cut). `out_dir` is a
feature store: shards of about `max_shard_mb` or `SHARD_SECONDS` of work, whichever comes first (a kill
loses at most the shard being filled), each written atomically and then listed, and the settings that
produced them (upstream name or path, checkpoint, weights fingerprint, layers, precision, stride, sample rate,
hidden sizes, receptive field). One run holds the
folder at a time (`speechrep.storage.OutputFolder`); re-running skips every stored utterance, and settings
that differ from the recorded ones stop the run unless `overwrite` starts over.
A file that cannot be read (AudioError) is logged and skipped; the returned summary lists the failures.
A full disk or unwritable folder stops the run with one OutputError line; what was listed stays valid.
Utterances longer than `chunk_seconds` go through `speechrep.upstream.chunking` one at a time; shorter ones
are sorted by duration and batched up to `max_batch_seconds` of padded audio.

Distributed (`part=Part(i, n)`, `speechrep extract --shard i/n` or one torchrun rank; `speechrep.parts`): the
work units above (a long utterance, a batch) of the whole corpus are planned alike by every part and dealt to
the n parts by padded seconds, so every utterance runs in the same batch as in a one-process run and its
features are the same bits. Part i writes a store of its own, `OUT/parts/<i>-of-<n>/` (same resume inside
it), while holding `OUT` shared, then its `done.json`. The last part to finish, any later run on `OUT`, or
`merge_parts` moves every part's shards into `OUT` (which then reads as one store, as if one process wrote
it); the done records stay, so a part run again finds its utterances in `OUT` and skips them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from speechrep.audio.io import audio_info, load_audio
from speechrep.errors import AudioError, ConfigError, SpeechrepError
from speechrep.parts import (
    Part,
    balance,
    digest,
    exclusive_or_none,
    missing_parts,
    part_folder,
    part_folders,
    read_done,
    write_done,
)
from speechrep.storage import OutputError, OutputFolder, atomic_write, atomic_write_text, ensure_output_dir
from speechrep.upstream.chunking import FrameGeometry, chunked_forward, frame_geometry
from speechrep.upstream.feature_store import FeatureStore, cut_key, fit_precision, store_settings

logger = logging.getLogger(__name__)

SHARD_SECONDS = 30.0  # a shard is also written after this much work: what a kill can lose at most

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
# fp32 and fp16 run in fp32 (fp16 stores like the benchmark's cache: fp32 where beyond its range);
# bf16 runs under bf16 autocast and stores bf16.
PRECISIONS = {"fp32": None, "fp16": None, "bf16": torch.bfloat16}
_OLD_FORMAT = ("index.jsonl", "extract.json")  # an --out written by speechrep extract before the store


@dataclass
class _Utterance:
    """One thing to extract: its id, where it comes from, its duration and how to read its samples."""

    id: str
    source: str
    duration: float
    load: Callable[[], Tensor]  # → (T,) float32 at the upstream's sample rate
    cut: str | None = None  # cut_key of a manifest's cut


@dataclass
class ExtractSummary:
    """What one `extract_features` call did."""

    out_dir: Path
    written: int = 0
    skipped: int = 0  # already in the index
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, one-line reason)
    part: Part | None = None  # the part of a distributed run this call did
    merged: list[str] | None = None  # the part folders merged into out_dir by this call (None: no merge)

    def __str__(self) -> str:
        part = f" part {self.part}" if self.part else ""
        lines = [f"{self.out_dir}{part}: wrote {self.written}, skipped {self.skipped} already done, "
                 f"failed {len(self.failures)}"]
        if self.merged is not None:
            lines.append(f"  merged {len(self.merged)} part folder(s) into {self.out_dir}")
        lines += [f"  failed: {reason}" for _, reason in self.failures]
        return "\n".join(lines)


def _manifest_utterances(path: Path, sample_rate: int) -> list[_Utterance]:
    """Utterances of a lhotse CutSet or RecordingSet manifest."""
    from lhotse import CutSet, RecordingSet, load_manifest

    try:
        manifest = load_manifest(path)
    except Exception as error:  # lhotse raises many types on malformed manifests
        reason = f"{type(error).__name__}: {error}"
        raise ConfigError(f"{path}: not a readable lhotse manifest ({reason})") from error
    if isinstance(manifest, RecordingSet):
        manifest = CutSet.from_manifests(recordings=manifest)
    if not isinstance(manifest, CutSet):
        raise ConfigError(f"{path}: a {type(manifest).__name__} has no audio (need a CutSet or RecordingSet)")

    def loader(cut) -> Callable[[], Tensor]:
        def load() -> Tensor:
            try:
                samples = cut.resample(sample_rate).load_audio()  # (channels, T)
            except Exception as error:
                raise AudioError(f"{path}: cut {cut.id}: {type(error).__name__}: {error}") from error
            return torch.from_numpy(samples).float().mean(0)

        return load

    return [_Utterance(cut.id, f"{path}#{cut.id}", float(cut.duration), loader(cut), cut_key(cut))
            for cut in manifest]


def _file_utterance(path: Path, utt_id: str, sample_rate: int) -> _Utterance:
    """An audio file; its duration comes from the header (AudioError if unreadable)."""
    return _Utterance(utt_id, str(path), audio_info(path).duration, lambda: load_audio(path, sample_rate)[0])


def audio_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Audio files under `folder`, following symlinked folders; loops and broken links come back as problems."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        here = os.stat(root)
        if (here.st_dev, here.st_ino) in seen:  # reached again through a symlink: a loop or a second path
            problems.append((root, f"{root}: symlinked folder already visited (a loop or a duplicate), skipped"))
            dirs.clear()
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.exists():
                problems.append((str(path), f"{path}: broken symlink, skipped"))
            elif path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                files.append(path)
    return files, problems


def collect_utterances(
    inputs: Sequence[str | os.PathLike], sample_rate: int = 16000
) -> tuple[list[_Utterance], list[tuple[str, str]]]:
    """Expand files, folders and manifests into utterances; unreadable files come back as failures."""
    found: list[_Utterance] = []
    failures: list[tuple[str, str]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files, problems = audio_files(entry)
            failures.extend(problems)
            if not files:
                raise ConfigError(f"{entry}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
            pairs = [(p, p.relative_to(entry).with_suffix("").as_posix()) for p in files]
        elif entry.name.endswith(MANIFEST_SUFFIXES):
            found.extend(_manifest_utterances(entry, sample_rate))
            continue
        elif entry.exists() or entry.suffix.lower() in AUDIO_SUFFIXES:
            pairs = [(entry, entry.stem)]
        else:
            raise ConfigError(f"{entry}: no such file, folder or manifest")
        for path, utt_id in pairs:
            try:
                found.append(_file_utterance(path, utt_id, sample_rate))
            except AudioError as error:
                failures.append((str(path), str(error)))
    seen: dict[str, str] = {}
    for utt in found:
        if utt.id in seen:
            raise ConfigError(f"utterance id {utt.id!r} comes from both {seen[utt.id]} and {utt.source}")
        seen[utt.id] = utt.source
    return found, failures


def read_index(out_dir: str | os.PathLike) -> dict[str, dict]:
    """Utterance id → entry (id, source, shard, keys, frames, layers, stride, sample_rate) of what is stored."""
    store = FeatureStore(out_dir)
    settings = store.settings or {}
    common = {key: settings.get(key) for key in ("layers", "stride", "sample_rate")}
    return {key: dict(entry, id=key, keys=[f"{key}/{layer}" for layer in common["layers"] or []], **common)
            for key, entry in store.index().items()}


def load_features(out_dir: str | os.PathLike, utt_id: str) -> dict[int, Tensor]:
    """Layer → (frames, hidden size) features of one extracted utterance."""
    store = FeatureStore(out_dir)
    if utt_id not in store.index():
        raise SpeechrepError(f"{out_dir}: utterance {utt_id!r} is not in this feature store")
    return store.load(utt_id)


def resolve_device_flag(name: str, flag: str = "--device") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps` → a device present here, or one ConfigError line naming `flag`."""
    from speechrep.ranks import resolve_device

    if name == "auto":
        return resolve_device("auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{flag} {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {name}: no CUDA device is available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return resolve_device("cuda") if device.index is None else device  # plain cuda: this rank's GPU
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {name}: MPS is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {name}: not a device to compute on; use auto, cpu, cuda or cuda:N")
    return device


def load_upstream_flag(name: str, checkpoint: str | os.PathLike | None = None,
                       flag: str = "--upstream") -> nn.Module:
    """`load_upstream_for_inference(name, checkpoint)` (a registry name without weights is seeded from its name
    and warns), with an unknown registry name as one ConfigError line naming `flag`."""
    from speechrep.upstream.loading import load_upstream_for_inference

    try:
        return load_upstream_for_inference(name, checkpoint)
    except ValueError as error:
        if isinstance(error, SpeechrepError) or not str(error).startswith("unknown upstream"):
            raise
        raise ConfigError(f"{flag} {name}: {error}, nor a model file or folder") from None


def _check_number(value: float, flag: str, minimum: float = 0.0, inclusive: bool = False) -> None:
    """One ConfigError line unless `value` is a finite number above (or at, if inclusive) `minimum`."""
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigError(f"{flag} {value}: must be a finite number {bound}")

def parse_layers(layers: str | Sequence[int], num_layers: int) -> list[int]:
    """"all" or layer indices (ints or "K,K,..") → a checked, sorted list of indices."""
    if isinstance(layers, str):
        if layers == "all":
            return list(range(num_layers))
        try:
            layers = [int(part) for part in layers.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"layers: expected 'all' or comma-separated integers, got {layers!r}") from None
    chosen = sorted(set(int(k) for k in layers))
    if not chosen or chosen[0] < 0 or chosen[-1] >= num_layers:
        raise ConfigError(f"layers: {list(layers)} out of range; this upstream has 0..{num_layers - 1}")
    return chosen


def plan_units(utterances: list[_Utterance], max_batch_seconds: float,
               chunk_seconds: float) -> list[list[_Utterance]]:
    """The work units of a run: each utterance over `chunk_seconds` alone, then the batches of the rest."""
    long = [[utt] for utt in utterances if utt.duration > chunk_seconds]
    short = [utt for utt in utterances if utt.duration <= chunk_seconds]
    return long + list(_batches(short, max_batch_seconds))


def unit_cost(unit: list[_Utterance]) -> float:
    """Seconds of (padded) audio a unit runs through the upstream, what parts are balanced by."""
    return len(unit) * max(utt.duration for utt in unit)


def _batches(utterances: list[_Utterance], max_batch_seconds: float) -> Iterable[list[_Utterance]]:
    """Longest first; each batch's padded length × size stays within `max_batch_seconds`."""
    ordered = sorted(utterances, key=lambda u: u.duration, reverse=True)
    batch: list[_Utterance] = []
    for utt in ordered:
        if batch and (len(batch) + 1) * batch[0].duration > max_batch_seconds:
            yield batch
            batch = []
        batch.append(utt)
    if batch:
        yield batch


def extract_features(
    upstream: nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    layers: str | Sequence[int] = "all",
    *,
    max_batch_seconds: float = 120.0,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 5.0,
    precision: str = "fp32",
    max_shard_mb: float = 64.0,
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    part: Part | None = None,
) -> ExtractSummary:
    """Write the hidden states of `layers` for every utterance of `inputs` to the store `out_dir` (module doc).

    `name`/`checkpoint` record where the upstream came from (default: its provenance or class name); the
    weights fingerprint is recorded too. `progress=None` shows a bar on a terminal. `part`: do only that part
    of a distributed run (module doc); the last part to finish merges."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    _check_number(max_batch_seconds, "--max-batch-seconds")
    _check_number(chunk_seconds, "--chunk-seconds")
    _check_number(overlap_seconds, "--overlap-seconds", inclusive=True)
    _check_number(max_shard_mb, "--shard-mb")
    if part is not None and overwrite:
        raise ConfigError("--overwrite with --shard (or under torchrun): each part would clear what the "
                          "others wrote; remove the output folder first, or extract into another --out")
    out = ensure_output_dir(Path(out_dir), "--out")
    old = [n for n in _OLD_FORMAT if (out / n).is_file()]
    if old and not overwrite:
        raise OutputError(f"--out {out}: written by an older speechrep extract ({old[0]}); use --overwrite to "
                          "start over or choose another output folder")
    geometry = frame_geometry(upstream)
    sample_rate = int(getattr(upstream, "sample_rate", 16000))
    chosen = parse_layers(layers, len(upstream.hidden_sizes))
    if name is None:
        provenance = getattr(upstream, "provenance", None)
        name = str(provenance) if provenance else type(upstream).__name__
    settings = dict(store_settings(upstream, name, chosen, precision, checkpoint),
                    receptive_field=geometry.receptive_field)
    work = dict(upstream=upstream, inputs=inputs, chosen=chosen, geometry=geometry, sample_rate=sample_rate,
                precision=precision, max_batch_seconds=max_batch_seconds, chunk_seconds=chunk_seconds,
                overlap_seconds=overlap_seconds, max_shard_bytes=int(max_shard_mb * 2**20), progress=progress)
    if part is None:
        with OutputFolder(out, "speechrep extract", settings, overwrite):
            store = FeatureStore(out)
            store.clean()  # what a killed run left: shards never listed, listings of removed shards
            merged = _merge_parts(out) if part_folders(out) else None  # what parts left unmerged
            summary = _extract(store=store, part=None, done=store.index(), **work)
            summary.merged = merged
            return summary
    # Parts hold OUT shared (settings checked alike) and each its own folder alone.
    with OutputFolder(out, f"speechrep extract part {part}", settings, shared=True, every_rank=True):
        folder = part_folder(out, part)
        part_settings = dict(settings, part=[part.index, part.count], max_batch_seconds=max_batch_seconds,
                             chunk_seconds=chunk_seconds)
        with OutputFolder(folder, f"speechrep extract part {part}", part_settings, every_rank=True):
            store = FeatureStore(folder)
            store.clean()
            done = {**FeatureStore(out).index(), **store.index()}
            summary = _extract(store=store, part=part, done=done, **work)
            summary.out_dir = out
    with exclusive_or_none(out, f"speechrep extract part {part} (merging)") as alone:
        plan = read_done(part_folder(out, part))["plan"]
        if alone and not missing_parts(out, part.count, plan):
            summary.merged = _merge_parts(out)
    return summary


def merge_parts(out_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Move the shards of every part folder into `out_dir` (taking it alone): (merged, unfinished) parts."""
    out = Path(out_dir)
    if FeatureStore(out).settings is None:
        raise ConfigError(f"--out {out}: not a feature store (nothing extracted here)")
    with OutputFolder(out, "speechrep extract --merge"):
        FeatureStore(out).clean()
        unfinished = [folder.name for folder in part_folders(out) if read_done(folder) is None]
        return _merge_parts(out), unfinished


def _merge_parts(out: Path) -> list[str]:
    """Move every part's listed shards into `out` (its holder alone); idempotent, a kill loses nothing."""
    settings = FeatureStore(out).settings or {}
    merged = []
    for folder in part_folders(out):
        part = FeatureStore(folder)
        recorded = {key: value for key, value in (part.settings or {}).items() if key in settings}
        if recorded != settings:
            logger.warning("%s: made with other settings than %s, not merged", folder, out)
            continue
        part.clean()  # nobody writes it: its writer held `out` shared
        for listing in sorted(folder.glob("shard-*.json")):
            shard = listing.with_suffix(".safetensors")
            target = out / shard.name
            # The shard first (a link, else a copy), then its listing: `out` never lists a missing shard.
            if not target.exists():
                try:
                    os.link(shard, target)
                except OSError:
                    atomic_write(target, lambda tmp, shard=shard: shutil.copyfile(shard, tmp))
            if not (out / listing.name).exists():
                atomic_write_text(out / listing.name, listing.read_text())
            listing.unlink()
            shard.unlink()
        merged.append(folder.name)
    return merged


def _extract(upstream: nn.Module, store: FeatureStore, inputs: Sequence[str | os.PathLike], chosen: list[int],
             geometry: FrameGeometry, sample_rate: int, precision: str, max_batch_seconds: float,
             chunk_seconds: float, overlap_seconds: float, max_shard_bytes: int,
             progress: bool | None, part: Part | None, done: dict[str, dict]) -> ExtractSummary:
    """The body of `extract_features`, run while holding the store's folder; `done`: what is stored."""
    utterances, failures = collect_utterances(inputs, sample_rate)
    for utt in utterances:  # a cut id reused by another manifest must not be taken for one already stored
        stored = done.get(utt.id, {}).get("cut")
        if utt.cut and stored and stored != utt.cut:
            raise ConfigError(f"utterance id {utt.id!r} of {utt.source} is stored from another cut "
                              f"({done[utt.id].get('source')}); extract this manifest into another --out")
    units = plan_units(utterances, max_batch_seconds, chunk_seconds)
    if part is not None:  # every part plans alike, then keeps its own units
        plan = digest(part.count, max_batch_seconds, chunk_seconds, [(u.id, u.duration) for u in utterances])
        units = [units[i] for i in balance([unit_cost(unit) for unit in units], part.count)[part.index]]
        failures = failures if part.index == 0 else []  # unreadable headers: reported once, by part 0
    mine = sum(len(unit) for unit in units)
    units = [todo for unit in units if (todo := [utt for utt in unit if utt.id not in done])]
    todo = [utt for unit in units for utt in unit]
    summary = ExtractSummary(store.folder, skipped=mine - len(todo), failures=failures, part=part)
    writer = store.writer(max_shard_bytes, SHARD_SECONDS)
    device = next((p.device for p in upstream.parameters()), torch.device("cpu"))
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[precision]) if PRECISIONS[precision]
                else contextlib.nullcontext())

    def store_one(utt: _Utterance, hidden: list[Tensor]) -> None:
        extra = {"cut": utt.cut} if utt.cut else {}
        writer.add(utt.id, {k: fit_precision(h, precision) for k, h in zip(chosen, hidden)},
                   frames=int(hidden[0].shape[0]), source=utt.source, **extra)
        summary.written += 1

    def fail(utt: _Utterance, error: AudioError) -> None:
        logger.warning("skipping %s: %s", utt.source, error)
        summary.failures.append((utt.source, str(error)))

    def load(utt: _Utterance) -> Tensor | None:
        try:
            wav = utt.load()
        except AudioError as error:
            fail(utt, error)
            return None
        if wav.shape[0] < geometry.receptive_field:
            fail(utt, AudioError(f"{utt.source}: {wav.shape[0]} samples, fewer than the "
                                 f"{geometry.receptive_field} of one frame"))
            return None
        return wav

    def run_batch(loaded: list[tuple[_Utterance, Tensor]]) -> None:
        if not loaded:
            return
        wavs = torch.nn.utils.rnn.pad_sequence([wav for _, wav in loaded], batch_first=True)
        wav_lens = torch.tensor([wav.shape[0] for _, wav in loaded])
        output = upstream(wavs.to(device), wav_lens.to(device))
        for row, (utt, _) in enumerate(loaded):
            frames = int(output.lengths[row])
            store_one(utt, [output.hidden_states[k][row, :frames] for k in chosen])

    upstream.eval()
    quiet = None if progress is None else not progress  # None: tqdm shows the bar on a terminal only
    bar = tqdm(total=len(todo), unit="utt", desc="extract" + (f" {part}" if part else ""), disable=quiet)
    try:
        with torch.inference_mode(), autocast:
            for batch in units:
                if batch[0].duration > chunk_seconds:  # a long utterance, always a unit of its own
                    utt = batch[0]
                    wav = load(utt)
                    if wav is not None:
                        output = chunked_forward(upstream, wav.to(device), chunk_seconds, overlap_seconds,
                                                 chosen)
                        store_one(utt, [hidden[0] for hidden in output.hidden_states])
                    bar.update(1)
                    continue
                loaded = [(utt, wav) for utt in batch if (wav := load(utt)) is not None]
                try:
                    run_batch(loaded)
                except AudioError:  # the upstream refused one of them: find it by running them alone
                    for utt, wav in loaded:
                        try:
                            run_batch([(utt, wav)])
                        except AudioError as error:
                            fail(utt, error)
                bar.update(len(batch))
    except BaseException:
        bar.close()
        # Keep what is done, also when interrupted; the error in flight says more than a failing last write.
        with contextlib.suppress(Exception):
            writer.flush()
        raise
    bar.close()
    writer.flush()
    if part is not None:
        write_done(store.folder, plan, {"part": str(part), "utterances": mine, "written": summary.written,
                                        "failed": len(summary.failures)})
    return summary

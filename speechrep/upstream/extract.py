"""Extract an upstream's hidden states for a corpus to disk: safetensors shards plus a JSONL index.

    from speechrep.upstream.extract import extract_features, load_features
    summary = extract_features(upstream, ["wavs/", "more.flac", "cuts.jsonl.gz"], "feats/", layers=[6, 12])
    feats = load_features("feats/", "spk1/utt1")  # {6: (T', H), 12: (T', H)}

Inputs are audio files, folders (searched recursively for audio suffixes) and lhotse manifests (CutSet or
RecordingSet). Utterance ids are paths relative to their folder without the suffix, a file's stem, or the
cut id. Layout of `out_dir`:
- `extract.json`: the settings every shard was written with (layers, stride, hidden sizes, precision);
- `shard-NNNNN.safetensors`: tensors named `<utterance id>/<layer>`, each (frames, hidden size);
- `index.jsonl`: one line per written utterance, the source of truth: id, source, shard, keys, frames,
  layers, stride, sample_rate. A line is appended only after its shard was written atomically (temporary
  file, then rename), so a killed run loses at most the utterances of the shard being filled; re-running
  skips every utterance in the index and removes shards the index does not reference.
A file that cannot be read (AudioError) is logged and skipped; the returned summary lists the failures.
Utterances longer than `chunk_seconds` go through `speechrep.upstream.chunking` one at a time; shorter ones
are sorted by duration and batched up to `max_batch_seconds` of padded audio.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from speechrep.audio.io import audio_info, load_audio
from speechrep.errors import AudioError, ConfigError, SpeechrepError
from speechrep.upstream.chunking import chunked_forward, frame_geometry

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
INDEX_NAME = "index.jsonl"
SETTINGS_NAME = "extract.json"
_SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.safetensors$")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class _Utterance:
    """One thing to extract: its id, where it comes from, its duration and how to read its samples."""

    id: str
    source: str
    duration: float
    load: Callable[[], Tensor]  # → (T,) float32 at the upstream's sample rate


@dataclass
class ExtractSummary:
    """What one `extract_features` call did."""

    out_dir: Path
    written: int = 0
    skipped: int = 0  # already in the index
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, one-line reason)

    def __str__(self) -> str:
        lines = [f"{self.out_dir}: wrote {self.written}, skipped {self.skipped} already done, "
                 f"failed {len(self.failures)}"]
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

    return [_Utterance(cut.id, f"{path}#{cut.id}", float(cut.duration), loader(cut)) for cut in manifest]


def _file_utterance(path: Path, utt_id: str, sample_rate: int) -> _Utterance:
    """An audio file; its duration comes from the header (AudioError if unreadable)."""
    return _Utterance(utt_id, str(path), audio_info(path).duration, lambda: load_audio(path, sample_rate)[0])


def collect_utterances(
    inputs: Sequence[str | os.PathLike], sample_rate: int = 16000
) -> tuple[list[_Utterance], list[tuple[str, str]]]:
    """Expand files, folders and manifests into utterances; unreadable files come back as failures."""
    found: list[_Utterance] = []
    failures: list[tuple[str, str]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
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
    """Utterance id → index entry for every utterance written to `out_dir` (whose shard exists)."""
    out = Path(out_dir)
    entries: dict[str, dict] = {}
    index = out / INDEX_NAME
    if not index.is_file():
        return entries
    for line in index.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: its utterance is simply redone
        if (out / entry["shard"]).is_file():
            entries[entry["id"]] = entry
    return entries


def load_features(out_dir: str | os.PathLike, utt_id: str) -> dict[int, Tensor]:
    """Layer → (frames, hidden size) features of one extracted utterance."""
    entry = read_index(out_dir).get(utt_id)
    if entry is None:
        raise SpeechrepError(f"{out_dir}: utterance {utt_id!r} is not in {INDEX_NAME}")
    with safe_open(str(Path(out_dir) / entry["shard"]), framework="pt") as shard:
        return {layer: shard.get_tensor(key) for layer, key in zip(entry["layers"], entry["keys"])}


class _ShardWriter:
    """Collects utterances' tensors; writes a shard atomically, then appends their index lines."""

    def __init__(self, out_dir: Path, max_shard_bytes: int, settings: dict):
        self.out_dir, self.max_shard_bytes, self.settings = out_dir, max_shard_bytes, settings
        referenced = {entry["shard"] for entry in read_index(out_dir).values()}
        numbers = [-1]
        for path in out_dir.iterdir():
            match = _SHARD_PATTERN.match(path.name)
            if path.name.endswith(".tmp") or (match and path.name not in referenced):
                path.unlink()  # left by a killed run: its utterances are not in the index
            elif match:
                numbers.append(int(match.group(1)))
        self.next_number = max(numbers) + 1
        self.tensors: dict[str, Tensor] = {}
        self.entries: list[dict] = []
        self.bytes = 0

    def add(self, utt: _Utterance, hidden: list[Tensor]) -> None:
        """Queue one utterance's selected layers (each (frames, H)); write a shard when full."""
        keys = [f"{utt.id}/{layer}" for layer in self.settings["layers"]]
        for key, tensor in zip(keys, hidden):
            tensor = tensor.detach().to("cpu")
            if tensor.untyped_storage().nbytes() > 1.1 * tensor.numel() * tensor.element_size():
                tensor = tensor.clone()  # a view of one row would pin the whole batch until written
            self.tensors[key] = tensor.contiguous()
            self.bytes += tensor.numel() * tensor.element_size()
        self.entries.append({"id": utt.id, "source": utt.source, "keys": keys,
                             "frames": int(hidden[0].shape[0]), "layers": self.settings["layers"],
                             "stride": self.settings["stride"], "sample_rate": self.settings["sample_rate"]})
        if self.bytes >= self.max_shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued utterances as one shard (temporary file, rename), then index them."""
        if not self.entries:
            return
        name = f"shard-{self.next_number:05d}.safetensors"
        tmp = self.out_dir / f"{name}.tmp"
        save_file(self.tensors, str(tmp))
        os.replace(tmp, self.out_dir / name)
        with open(self.out_dir / INDEX_NAME, "a") as index:
            index.writelines(json.dumps(dict(entry, shard=name)) + "\n" for entry in self.entries)
            index.flush()
            os.fsync(index.fileno())
        self.next_number += 1
        self.tensors, self.entries, self.bytes = {}, [], 0


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix features of different settings in one directory; record them on first use."""
    path = out_dir / SETTINGS_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        differing = sorted(k for k in settings if k != "upstream" and previous.get(k) != settings[k])
        if differing:
            raise ConfigError(f"{out_dir}: holds features written with other settings "
                              f"({', '.join(differing)} differ from {SETTINGS_NAME}); use another directory")
    else:
        path.write_text(json.dumps(settings, indent=2) + "\n")


def parse_layers(layers: str | Sequence[int], num_layers: int) -> list[int]:
    """"all" or layer indices (ints or "K,K,..") → a checked, sorted list of indices."""
    if isinstance(layers, str):
        if layers == "all":
            return list(range(num_layers))
        try:
            layers = [int(part) for part in layers.split(",") if part.strip()]
        except ValueError as error:
            raise ConfigError(f"layers: expected 'all' or comma-separated integers, got {layers!r}") from None
    chosen = sorted(set(int(k) for k in layers))
    if not chosen or chosen[0] < 0 or chosen[-1] >= num_layers:
        raise ConfigError(f"layers: {list(layers)} out of range; this upstream has 0..{num_layers - 1}")
    return chosen


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
    max_shard_mb: float = 512.0,
    progress: bool | None = None,
) -> ExtractSummary:
    """Write the hidden states of `layers` for every utterance of `inputs` to `out_dir` (see module doc).

    precision "bf16" runs under bf16 autocast and stores bf16. `progress=None` shows a bar on a terminal."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geometry = frame_geometry(upstream)
    sample_rate = int(getattr(upstream, "sample_rate", 16000))
    chosen = parse_layers(layers, len(upstream.hidden_sizes))
    settings = {"upstream": getattr(upstream, "provenance", type(upstream).__name__), "layers": chosen,
                "hidden_sizes": [upstream.hidden_sizes[k] for k in chosen], "stride": geometry.stride,
                "receptive_field": geometry.receptive_field, "sample_rate": sample_rate,
                "precision": precision}
    _check_settings(out, settings)
    utterances, failures = collect_utterances(inputs, sample_rate)
    done = read_index(out)
    todo = [utt for utt in utterances if utt.id not in done]
    summary = ExtractSummary(out, skipped=len(utterances) - len(todo), failures=failures)
    writer = _ShardWriter(out, int(max_shard_mb * 2**20), settings)
    device = next((p.device for p in upstream.parameters()), torch.device("cpu"))
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[precision]) if PRECISIONS[precision]
                else contextlib.nullcontext())
    store_dtype = PRECISIONS[precision] or torch.float32

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
            writer.add(utt, [output.hidden_states[k][row, :frames].to(store_dtype) for k in chosen])
            summary.written += 1

    upstream.eval()
    long = [utt for utt in todo if utt.duration > chunk_seconds]
    short = [utt for utt in todo if utt.duration <= chunk_seconds]
    quiet = None if progress is None else not progress  # None: tqdm shows the bar on a terminal only
    bar = tqdm(total=len(todo), unit="utt", desc="extract", disable=quiet)
    try:
        with torch.inference_mode(), autocast:
            for utt in long:
                wav = load(utt)
                if wav is not None:
                    output = chunked_forward(upstream, wav.to(device), chunk_seconds, overlap_seconds, chosen)
                    writer.add(utt, [hidden[0].to(store_dtype) for hidden in output.hidden_states])
                    summary.written += 1
                bar.update(1)
            for batch in _batches(short, max_batch_seconds):
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
    finally:
        bar.close()
        writer.flush()  # keep what is done, also when interrupted
    return summary

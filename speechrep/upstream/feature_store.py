"""One on-disk feature store: what `speechrep extract` writes and what the benchmark's feature cache reads.

    store = FeatureStore.open("feats/")
    store.check_suits(upstream_fingerprint(upstream), layers=range(13), precision="fp16")
    features = store.load("spk1/utt1")  # {layer: (T', H)}

Layout of a store folder:
- `.speechrep.settings.json` (`speechrep.storage.check_settings`): what produced every shard — format,
  upstream (registry name or path), checkpoint, fingerprint (`upstream_fingerprint` of the weights), layers,
  precision, stride, sample_rate, hidden_sizes (extract adds receptive_field);
- `shard-<uuid>.safetensors`: tensors named `<key>/<layer>`, each (frames, hidden size);
- `shard-<uuid>.json`: the shard's entries (key, frames, and where known source and cut key), written after
  its shard, both atomically. A shard counts only once its listing exists, so the index (every listing whose
  shard exists) only ever names tensors that exist.
Every shard has its own uuid name, so writers never share a file. Removing what a killed writer left (shards
without listing, listings without shard, temporaries) is `clean()`, for the one writer that holds the
folder's lock: a concurrent writer between its two renames would look like such a leftover.
Keys are utterance ids (extract) or `cut_key`s (benchmark cache); an entry extracted from a lhotse manifest
also records its cut key, so the benchmark finds it by cut. Shards are memory-mapped and read key by key.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from speechrep.errors import ConfigError, SpeechrepError
from speechrep.storage import SETTINGS_NAME, atomic_write, atomic_write_text, disk_errors, remove_temporaries

FORMAT = "speechrep-features/1"
FP16_MAX = 65504.0
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def upstream_fingerprint(upstream: nn.Module) -> str:
    """A 16-hex-digit hash of an upstream's class, config, hidden sizes, stride, weights and buffers."""
    h = hashlib.sha256()
    h.update(f"{type(upstream).__module__}.{type(upstream).__qualname__}".encode())
    h.update(repr(getattr(upstream, "config", None)).encode())
    h.update(repr((list(upstream.hidden_sizes), int(upstream.stride))).encode())
    for name, tensor in sorted(upstream.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # flattened first: a 0-dim buffer (BatchNorm's num_batches_tracked) cannot change its element size
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cut_key(cut) -> str:  # any lhotse cut
    """Cache key of a cut: its id plus a hash of its audio source, offset and duration."""
    src = cut.recording.sources[0].source if cut.has_recording else ""
    digest = hashlib.sha1(f"{src}|{cut.start:.6f}|{cut.duration:.6f}|{cut.channel}".encode()).hexdigest()[:10]
    return f"{cut.id}#{digest}"


def store_settings(upstream: nn.Module, name: str, layers: Iterable[int], precision: str,
                   checkpoint: str | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    """The settings a store records for features of `layers` of `upstream` stored at `precision`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    layers = [int(k) for k in layers]
    return {"format": FORMAT, "upstream": str(name), "checkpoint": None if checkpoint is None else str(checkpoint),
            "fingerprint": fingerprint or upstream_fingerprint(upstream), "layers": layers,
            "precision": precision, "stride": int(upstream.stride),
            "sample_rate": int(getattr(upstream, "sample_rate", 16000)),
            "hidden_sizes": [int(upstream.hidden_sizes[k]) for k in layers]}


@lru_cache(maxsize=8)
def _open_shard(path: str):  # safetensors' handle type is not importable
    """A memory-mapped safetensors handle, kept open for the few shards in use."""
    return safe_open(path, framework="pt")


class FeatureStore:
    """A folder of features (see the module docstring): its settings, index, reader and writers."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._index: dict[str, dict] | None = None  # key -> entry (with "shard")
        self._by_cut: dict[str, str] | None = None  # cut key -> key, for entries keyed otherwise

    @classmethod
    def open(cls, folder: str | Path, flag: str = "--features") -> FeatureStore:
        """An existing store to read, or a one-line ConfigError naming `flag` and what is wrong with it."""
        store = cls(folder)
        if not store.folder.is_dir():
            raise ConfigError(f"{flag} {store.folder}: no such folder")
        settings = store.settings
        if settings is None or settings.get("format") != FORMAT:
            raise ConfigError(f"{flag} {store.folder}: not a feature store (no {SETTINGS_NAME} of format {FORMAT}; "
                              "write one with `speechrep extract`)")
        return store

    @property
    def settings(self) -> dict[str, Any] | None:
        """The recorded settings, or None where none are recorded (yet)."""
        path = self.folder / SETTINGS_NAME
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def check_suits(self, fingerprint: str, layers: Iterable[int], precision: str | None = None) -> None:
        """Raise one ConfigError line unless the store holds `layers` of the upstream with this fingerprint."""
        settings = self.settings or {}
        if settings.get("fingerprint") != fingerprint:
            raise ConfigError(f"{self.folder}: features of another upstream (weights fingerprint "
                              f"{settings.get('fingerprint')}, this run's upstream has {fingerprint})")
        lacking = sorted({int(k) for k in layers} - set(settings.get("layers", [])))
        if lacking:
            raise ConfigError(f"{self.folder}: has layers {settings.get('layers')}, lacks {lacking}; "
                              "extract them with --layers all")
        if precision is not None and settings.get("precision") != precision:
            raise ConfigError(f"{self.folder}: stored as {settings.get('precision')}, this run wants {precision}")

    # ------------------------------------------------------------------------------------------ reading

    def index(self) -> dict[str, dict]:
        """Key → entry (key, shard, frames, ...) of every stored utterance whose shard exists."""
        if self._index is None:
            self._index, self._by_cut = {}, {}
            for listing in sorted(self.folder.glob("shard-*.json")):
                shard = listing.with_suffix(".safetensors")
                if not shard.is_file():
                    continue  # its shard was removed (a listing is always written after its shard)
                try:
                    entries = json.loads(listing.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                for entry in entries:
                    self._remember(entry if isinstance(entry, dict) else {"key": entry}, shard.name)
        return self._index

    def _remember(self, entry: dict, shard: str) -> None:
        entry = dict(entry, shard=shard)
        self._index[entry["key"]] = entry
        if entry.get("cut") and entry["cut"] != entry["key"]:
            self._by_cut[entry["cut"]] = entry["key"]

    def refresh(self) -> None:
        """Forget the index read so far (another writer may have added shards)."""
        self._index = self._by_cut = None

    def key_for_cut(self, cut) -> str | None:  # any lhotse cut
        """The key under which `cut` is stored (its cut key, or the id it was extracted under), or None."""
        index, key = self.index(), cut_key(cut)
        if key in index:
            return key
        return self._by_cut.get(key)

    def tensor(self, key: str, layer: int) -> Tensor:
        """One stored (frames, H) tensor, read from its memory-mapped shard."""
        entry = self.index().get(key)
        if entry is None:
            raise SpeechrepError(f"{self.folder}: {key!r} is not in the feature store")
        return _open_shard(str(self.folder / entry["shard"])).get_tensor(f"{key}/{layer}")

    def load(self, key: str) -> dict[int, Tensor]:
        """Layer → (frames, H) of one stored utterance, for every layer the store holds."""
        return {layer: self.tensor(key, layer) for layer in (self.settings or {}).get("layers", [])}

    # ------------------------------------------------------------------------------------------ writing

    def clean(self) -> int:
        """Remove shards without listing, listings without shard and temporaries (lock holder only)."""
        removed = remove_temporaries(self.folder)
        shards = {p.stem for p in self.folder.glob("shard-*.safetensors")}
        listings = {p.stem for p in self.folder.glob("shard-*.json")}
        for stem in shards ^ listings:
            leftover = self.folder / (f"{stem}.safetensors" if stem in shards else f"{stem}.json")
            leftover.unlink(missing_ok=True)
            removed += 1
        self.refresh()
        return removed

    def writer(self, max_shard_bytes: int, max_shard_seconds: float | None = None) -> ShardWriter:
        """A writer of new shards of about `max_shard_bytes` each (or what `max_shard_seconds` of work made)."""
        return ShardWriter(self, max_shard_bytes, max_shard_seconds)


class ShardWriter:
    """Queues utterances' tensors; writes a full queue as one shard, then its listing (see module doc).

    Memory stays within about `max_shard_bytes` plus one utterance; `flush()` writes what is queued. With
    `max_shard_seconds`, a queue older than that is written too, so a kill loses at most that much work even
    when the features are small (one layer of a slow model)."""

    def __init__(self, store: FeatureStore, max_shard_bytes: int, max_shard_seconds: float | None = None):
        self.store, self.max_shard_bytes, self.max_shard_seconds = store, max_shard_bytes, max_shard_seconds
        self.tensors: dict[str, Tensor] = {}
        self.entries: list[dict] = []
        self.bytes = 0
        self.started = 0.0  # time.monotonic() of the first utterance in the queue

    def add(self, key: str, layers: dict[int, Tensor], **info: Any) -> None:
        """Queue one utterance's (frames, H) tensors by layer, with entry fields `info` (frames, source, cut)."""
        for layer, tensor in layers.items():
            tensor = tensor.detach().to("cpu")
            if tensor.untyped_storage().nbytes() > 1.1 * tensor.numel() * tensor.element_size():
                tensor = tensor.clone()  # a view of one row would pin the whole batch until written
            self.tensors[f"{key}/{layer}"] = tensor.contiguous()
            self.bytes += tensor.numel() * tensor.element_size()
        if not self.entries:
            self.started = time.monotonic()
        self.entries.append({"key": key, **info})
        too_old = self.max_shard_seconds is not None and time.monotonic() - self.started >= self.max_shard_seconds
        if self.bytes >= self.max_shard_bytes or too_old:
            self.flush()

    def flush(self) -> None:
        """Write the queued utterances as one shard and then its listing; a failed write drops the queue."""
        if not self.entries:
            return
        tensors, entries = self.tensors, self.entries
        self.tensors, self.entries, self.bytes = {}, [], 0
        name = f"shard-{uuid.uuid4().hex[:16]}"
        folder = self.store.folder
        with disk_errors(folder):
            atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
            atomic_write_text(folder / f"{name}.json", json.dumps(entries))
        if self.store._index is not None:
            for entry in entries:
                self.store._remember(entry, f"{name}.safetensors")


def fit_precision(tensor: Tensor, precision: str) -> Tensor:
    """`tensor` in the store's dtype; fp16 keeps values beyond its range in fp32 (a few large models have them)."""
    dtype = PRECISIONS[precision]
    if dtype == torch.float16 and tensor.numel() and not tensor.abs().max() < FP16_MAX:
        dtype = torch.float32
    return tensor.to(dtype)

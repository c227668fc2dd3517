"""Where downstream heads get their input: an upstream's hidden states, live or from an on-disk cache.

    source = FeatureSource("hubert_tiny", load_upstream("hubert_tiny"), cache_root=Path("out/features"))
    batches = source.batches(train_cuts, max_duration=100.0, shuffle=True, seed=0)  # epoch -> FeatureBatch
    encoder = source.encoder(get_tuning("frozen"), layers=None)  # nn.Module: batch -> (features, lengths)

A frozen upstream gives the same hidden states every epoch, so they are computed once per upstream and cut
and stored as fp16 (every layer, so the Featurizer's weighted sum stays trainable). The cache lives in
`cache_root/<upstream name>-<fingerprint>/`; the fingerprint hashes the upstream's class, config, hidden
sizes, stride and weights, so retraining or editing an upstream never reuses stale features. Entries are
keyed by cut id plus a hash of the cut's audio source, start and duration (two corpora may reuse a cut id).
The cache is a `speechrep.upstream.feature_store.FeatureStore` (the format `speechrep extract` writes): whole
shards only, so a killed run leaves nothing half-written and the next run computes just the missing cuts;
shards are memory-mapped and read cut by cut, so memory stays bounded by the batch, not the corpus. (Under
torchrun every rank fills the cache it needs; shards written twice are harmless duplicates.)

A sequence-compressed upstream (`UpstreamOutput.frame_times`) gives utterance tasks its short sequence; a
frame-level task reads it on the upstream's frame grid (`FeatureSource.frame_grid_view()`, its own cache
folder), each segment repeated over the grid frames it covers. One that pools between phone boundaries
(`needs_boundaries`) gets them from each cut's phone alignment, or from a boundaries file.

A tuning strategy that trains the upstream (`full`, ...) makes it part of the trained model; it runs live.
`CorpusNormalizer` normalises each layer with mean/std computed on the train split (the `fbank_global`
baseline: raw filterbanks with corpus-level rather than per-utterance CMVN).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio
from torch import Tensor, nn
from tqdm import tqdm

from speechrep.audio.conditions import Condition, Other, draw_condition
from speechrep.data.batching import cut_sampler, rank_and_world
from speechrep.data.boundaries import BoundarySource
from speechrep.errors import CheckpointError, SpeechrepError
from speechrep.storage import check_settings
from speechrep.tuning import FrozenUpstream, TuningStrategy
from speechrep.upstream.base import FrameGeometry, on_frame_grid, padding_mask
from speechrep.upstream.feature_store import (  # cut_key, upstream_fingerprint: importable from here as before
    FeatureStore,
    cut_key,
    fit_precision,
    store_settings,
    upstream_fingerprint,
)
from speechrep.upstream.featurizer import Featurizer

log = logging.getLogger(__name__)

SHARD_BYTES = 256 * 2**20  # one cache shard holds about this much fp16 data
CACHE_BATCH_SECONDS = 160.0  # audio per upstream forward while filling the cache
_PRECISION_NAMES = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16"}


@dataclass
class FeatureBatch:
    """The cuts of one batch (their labels) and its input: padded audio, or cached hidden states."""

    cuts: CutSet
    wavs: Tensor | None = None  # (B, T) float32
    wav_lens: Tensor | None = None  # (B,)
    hidden_states: list[Tensor] | None = None  # one (B, T', H) per layer, from the cache
    lengths: Tensor | None = None  # (B,) valid frames of hidden_states

    def __len__(self) -> int:
        return len(self.cuts)


# ------------------------------------------------------------------------------------------- upstream forward

@dataclass(frozen=True)
class SequenceView:
    """How a compressed upstream's output reaches a task: its segment boundaries (alignment-pooled upstreams)
    and the frame grid that frame-level tasks read it on (None: the compressed sequence itself)."""

    boundaries: BoundarySource | None = None
    grid: FrameGeometry | None = None


def run_upstream(upstream: nn.Module, wavs: Tensor, wav_lens: Tensor, cuts: CutSet | None = None,
                 sequence: SequenceView | None = None) -> tuple[list[Tensor], Tensor]:
    """Every hidden state (B, T', H) of `upstream` and the valid frame counts, padding frames zeroed.

    `sequence` (with the batch's `cuts`) feeds a compressed upstream its boundaries and maps its output onto
    the frame grid."""
    kwargs = {}
    if sequence is not None and sequence.boundaries is not None:
        if cuts is None:
            raise SpeechrepError("this upstream pools between segment boundaries: it needs the batch's cuts")
        kwargs["boundaries"] = sequence.boundaries.for_cuts(cuts)
    out = upstream(wavs, wav_lens, **kwargs)
    if sequence is not None and sequence.grid is not None:
        states, lengths = on_frame_grid(out, wav_lens, sequence.grid)
    else:
        states, lengths = out.hidden_states, out.lengths
    lengths = lengths.to(wavs.device).long()
    mask = padding_mask(lengths, states[0].shape[1])[..., None]
    # Some upstreams leave garbage in padded frames; zero them so pooling and the cache never see it.
    return [h * mask.to(h.dtype) for h in states], lengths


# -------------------------------------------------------------------------------------------------- the cache

class FeatureCache:
    """All-layer hidden states of one upstream in a `FeatureStore`, keyed by `cut_key` (cut id + source hash)."""

    def __init__(self, directory: Path, dtype: torch.dtype = torch.float16, name: str | None = None,
                 read_only: bool = False):
        self.store = FeatureStore(directory)
        self.directory = self.store.folder
        self.dtype = dtype
        self.name = name or self.directory.name  # the upstream's name, recorded in the store's settings
        self.read_only = read_only

    @classmethod
    def from_store(cls, folder: Path, upstream: nn.Module, flag: str = "--features") -> FeatureCache:
        """A read-only cache on a store `speechrep extract` wrote, checked to hold every layer of `upstream`."""
        store = FeatureStore.open(folder, flag)
        store.check_suits(upstream_fingerprint(upstream), range(len(upstream.hidden_sizes)))
        return cls(store.folder, read_only=True)

    def index(self) -> dict[str, dict]:
        """Key → entry of every cut already cached (read from the store's shard listings)."""
        return self.store.index()

    def missing(self, cuts: CutSet) -> CutSet:
        """The cuts of `cuts` that are not cached yet."""
        store = self.store
        return cuts.filter(lambda c: store.key_for_cut(c) is None).to_eager()

    def fill(self, cuts: CutSet, upstream: nn.Module, device: torch.device,
             sequence: SequenceView | None = None) -> None:
        """Compute and store the hidden states of every cut not cached yet, one atomic shard at a time."""
        todo = self.missing(cuts)
        if len(todo) == 0:
            return
        if self.read_only:
            example = next(iter(todo)).id
            raise SpeechrepError(f"{self.directory}: {len(todo)} of these {len(cuts)} cuts are not in the "
                                 f"feature store (e.g. {example!r}); extract their manifest into it first")
        precision = _PRECISION_NAMES[self.dtype]
        check_settings(self.directory, store_settings(upstream, self.name, range(len(upstream.hidden_sizes)),
                                                      precision))
        log.info("feature cache %s: computing %d of %d cuts", self.directory, len(todo), len(cuts))
        writer = self.store.writer(SHARD_BYTES)
        # Every cut, whatever the DDP rank: each rank fills the cache it reads (lhotse would shard by rank).
        sampler = cut_sampler(todo, CACHE_BATCH_SECONDS, shuffle=False)  # rank 0 of 1: every cut
        upstream.to(device).eval()
        bar = tqdm(total=len(todo), desc=f"features {self.directory.parent.name}", unit="cut",
                   disable=not os.isatty(2))
        with torch.inference_mode():
            for batch_cuts in sampler:
                wavs, wav_lens = collate_audio(batch_cuts)
                states, lengths = run_upstream(upstream, wavs.float().to(device), wav_lens.long().to(device),
                                               batch_cuts, sequence)
                for i, cut in enumerate(batch_cuts):
                    n = int(lengths[i])
                    writer.add(cut_key(cut), {layer: fit_precision(h[i, :n].to("cpu"), precision)
                                              for layer, h in enumerate(states)}, frames=n)
                bar.update(len(batch_cuts))
        writer.flush()
        bar.close()

    def read(self, cuts: CutSet, num_layers: int) -> tuple[list[Tensor], Tensor]:
        """Padded hidden states (one (B, T', H) float32 per layer) and frame counts of the given cuts."""
        per_cut = []
        for cut in cuts:
            key = self.store.key_for_cut(cut)
            if key is None:
                raise SpeechrepError(f"{self.directory}: cut {cut.id!r} is not in the feature cache")
            per_cut.append([self.store.tensor(key, layer) for layer in range(num_layers)])
        lengths = torch.tensor([layers[0].shape[0] for layers in per_cut], dtype=torch.long)
        states = [nn.utils.rnn.pad_sequence([layers[k].float() for layers in per_cut], batch_first=True)
                  for k in range(num_layers)]
        return states, lengths


# ---------------------------------------------------------------------------------------------- normalisation

class CorpusNormalizer(nn.Module):
    """Per-layer, per-dimension standardisation with statistics of a whole (train) split."""

    def __init__(self, means: list[Tensor], stds: list[Tensor]):
        super().__init__()
        for k, (m, s) in enumerate(zip(means, stds)):
            self.register_buffer(f"mean_{k}", m.float())
            self.register_buffer(f"std_{k}", s.float())
        self.num_layers = len(means)

    def forward(self, states: list[Tensor], lengths: Tensor) -> list[Tensor]:
        """Standardised hidden states; padding frames stay zero."""
        mask = padding_mask(lengths, states[0].shape[1])[..., None]
        return [((h - getattr(self, f"mean_{k}")) / getattr(self, f"std_{k}")) * mask
                for k, h in enumerate(states)]


# --------------------------------------------------------------------------------------------- encoder module

class FeatureEncoder(nn.Module):
    """FeatureBatch → (features (B, T', H), lengths): upstream (live or cached) → normaliser → Featurizer.

    `tuning` prepares the upstream (`speechrep.tuning`): its prepared module is the submodule `upstream`, so
    what trains is the strategy's choice, and the state dict (the run's checkpoints) holds only the upstream
    keys the strategy names in `checkpoint_keys` (frozen: none; full: all); loading tolerates the others.
    The state dict also records the fingerprint of the base upstream's weights and the strategy's name
    (`_extra_state`): loading it into an encoder over another upstream is a CheckpointError, never a model
    that silently mixes trained parts of one upstream with the weights of another.
    """

    def __init__(self, upstream: nn.Module, tuning: TuningStrategy, layers: list[int] | None,
                 normalizer: CorpusNormalizer | None = None, normalize_layers: bool = False,
                 base_fingerprint: str | None = None, sequence: SequenceView | None = None):
        super().__init__()
        self.tuning = tuning
        self.sequence = sequence
        self.base_upstream = base_fingerprint or upstream_fingerprint(upstream)  # before prepare changes it
        self.upstream = tuning.prepare(upstream)
        self.normalizer = normalizer
        self.featurizer = Featurizer(upstream.hidden_sizes, layers=layers, normalize=normalize_layers)
        saved = set(tuning.checkpoint_keys(self.upstream))
        self._unsaved = {f"upstream.{k}" for k in self.upstream.state_dict() if k not in saved}
        if self._unsaved:  # e.g. the untouched weights under inserted adapters: already in the upstream
            self.register_state_dict_post_hook(self._drop_unsaved)
        self.register_load_state_dict_post_hook(self._allow_unsaved)

    def get_extra_state(self) -> dict[str, str]:
        """What the trained state belongs to: the base upstream's weights fingerprint and the strategy."""
        return {"base_upstream": self.base_upstream, "tuning": self.tuning.name}

    def set_extra_state(self, state: dict[str, str]) -> None:
        """CheckpointError unless the checkpoint was trained on this base upstream."""
        saved = state.get("base_upstream")
        if saved is not None and saved != self.base_upstream:
            raise CheckpointError(
                f"checkpoint trained on upstream weights {saved} (tuning {state.get('tuning')}); "
                f"this model's upstream has weights {self.base_upstream}: load it onto the upstream it was "
                f"trained with"
            )

    @staticmethod
    def _drop_unsaved(module: FeatureEncoder, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        for key in module._unsaved:
            state.pop(prefix + key, None)

    @staticmethod
    def _allow_unsaved(module: FeatureEncoder, incompatible: Any) -> None:
        # checkpoints written before the base upstream was recorded have no `_extra_state`: still loadable
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.endswith("_extra_state")
                                        and not any(k == u or k.endswith("." + u) for u in module._unsaved)]

    def hidden_states(self, batch: FeatureBatch) -> tuple[list[Tensor], Tensor]:
        """Every layer's hidden states of the batch (from the cache, or the upstream run now)."""
        if batch.hidden_states is not None:
            return batch.hidden_states, batch.lengths
        return run_upstream(self.upstream, batch.wavs, batch.wav_lens, batch.cuts, self.sequence)

    def forward(self, batch: FeatureBatch) -> tuple[Tensor, Tensor]:
        """The weighted sum of the (normalised) layers and the valid frame counts."""
        states, lengths = self.hidden_states(batch)
        if self.normalizer is not None:
            states = self.normalizer(states, lengths)
        return self.featurizer.combine(states, lengths)

    def layer_weights(self) -> list[float]:
        """The learned softmax weight of each layer (for results.json)."""
        return [round(float(w), 6) for w in self.featurizer.layer_weights()]


class DownstreamModel(nn.Module):
    """The trained model of one run: feature encoder, then the task head.

    `model(batch)` returns `(head output, lengths)`: the frame counts of the features, which frame heads keep
    (CTC needs them); utterance heads ignore them.
    """

    def __init__(self, encoder: FeatureEncoder, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, batch: FeatureBatch) -> tuple[Any, Tensor]:
        """The head's output for the batch and the valid frame counts."""
        features, lengths = self.encoder(batch)
        return self.head(features, lengths), lengths


# ------------------------------------------------------------------------------------------------ the source

def _cut_sampler(cuts: CutSet, max_duration: float, shuffle: bool, seed: int, epoch: int) -> Iterable[CutSet]:
    """Duration-bounded CutSet batches, deterministic for (cuts, seed, epoch).

    Shuffled (training) batches are this DDP rank's share; ordered (evaluation) batches cover the whole split,
    because only rank 0 evaluates.
    """
    rank, world = rank_and_world() if shuffle else (0, 1)
    return cut_sampler(cuts, max_duration, shuffle, seed, epoch, rank, world)


class FeatureSource:
    """One upstream and, when it is frozen, its feature cache: makes batches and the encoder module."""

    def __init__(self, name: str, upstream: nn.Module, cache_root: Path | None = None,
                 cache_dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu",
                 fingerprint: str | None = None, boundaries: str | None = None, frame_grid: bool = False):
        self.name = name
        self.upstream = upstream
        self.device = torch.device(device)
        self.cache: FeatureCache | None = None
        self._fingerprint = fingerprint  # `upstream_fingerprint(upstream)` when the caller knows it already
        self._cache_args = (cache_root, cache_dtype)
        self.boundaries = boundaries  # a boundaries file, or None: the cuts' phone alignments
        # a compressed upstream: its boundaries, and (frame_grid) its output mapped onto its frame grid
        compressed = bool(getattr(upstream, "compressed", False))
        self.sequence = SequenceView(
            BoundarySource(boundaries) if getattr(upstream, "needs_boundaries", False) else None,
            upstream.frame_geometry if frame_grid and compressed else None,
        )
        if cache_root is not None:
            grid = "-grid" if self.sequence.grid is not None else ""
            folder = Path(cache_root) / f"{_safe(name)}-{self.fingerprint}{grid}"
            self.cache = FeatureCache(folder, cache_dtype, name=name)
        self.hidden_sizes: list[int] = list(upstream.hidden_sizes)
        self.stride: int = int(upstream.stride)
        self.frame_shift: float = self.stride / int(getattr(upstream, "sample_rate", 16000))  # seconds

    def frame_grid_view(self) -> FeatureSource:
        """This source for a frame-level task: a compressed upstream's output on its frame grid (a cache of
        its own); any other upstream's source is returned as it is."""
        if not getattr(self.upstream, "compressed", False):
            return self
        cache_root, cache_dtype = self._cache_args
        return FeatureSource(self.name, self.upstream, cache_root, cache_dtype, self.device,
                             self._fingerprint, self.boundaries, frame_grid=True)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the upstream's weights (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = upstream_fingerprint(self.upstream)
        return self._fingerprint

    @property
    def hidden_size(self) -> int:
        """Size of the Featurizer's output (every layer of an upstream has the same size)."""
        return self.hidden_sizes[-1]

    def batches(self, cuts: CutSet, max_duration: float, shuffle: bool, seed: int = 0,
                live: bool = False, condition: Condition | None = None,
                others: Sequence[Other] | None = None,
                mixture: Sequence[Condition] = ()) -> Callable[[int], Iterable[FeatureBatch]]:
        """A function epoch → FeatureBatches; cached hidden states unless caching is off or `live`.

        A non-clean `condition` distorts each cut's audio (`others`: the split's utterances, for babble) and
        always runs live: distorted audio never reads or fills the clean cache. A `mixture` (distorted
        training) puts each cut under one of its conditions, drawn per (seed, epoch, cut id); also live."""
        if max_duration <= 0:
            raise SpeechrepError(f"max_duration must be positive, got {max_duration}")
        distort = (condition is not None and not condition.is_clean) or bool(mixture)
        cache = None if live or distort else self.cache
        if cache is not None:
            cache.fill(cuts, self.upstream, self.device, self.sequence)
        num_layers = len(self.hidden_sizes)

        def make(epoch: int) -> Iterable[FeatureBatch]:
            for batch_cuts in _cut_sampler(cuts, max_duration, shuffle, seed, epoch):
                batch_cuts = batch_cuts.sort_by_duration(ascending=False)
                if cache is not None:
                    states, lengths = cache.read(batch_cuts, num_layers)
                    yield FeatureBatch(batch_cuts, hidden_states=states, lengths=lengths)
                elif mixture:
                    drawn = [draw_condition(mixture, cut.id, seed, epoch) for cut in batch_cuts]
                    wavs, wav_lens = distorted_audio(batch_cuts, drawn, others)
                    yield FeatureBatch(batch_cuts, wavs=wavs, wav_lens=wav_lens)
                elif distort:
                    wavs, wav_lens = distorted_audio(batch_cuts, condition, others)
                    yield FeatureBatch(batch_cuts, wavs=wavs, wav_lens=wav_lens)
                else:
                    wavs, wav_lens = collate_audio(batch_cuts)
                    yield FeatureBatch(batch_cuts, wavs=wavs.float(), wav_lens=wav_lens.long())

        return make

    def corpus_normalizer(self, cuts: CutSet, max_duration: float = CACHE_BATCH_SECONDS) -> CorpusNormalizer:
        """Per-layer mean and std over every valid frame of `cuts` (the train split)."""
        sums = [torch.zeros(h, dtype=torch.float64) for h in self.hidden_sizes]
        squares = [torch.zeros(h, dtype=torch.float64) for h in self.hidden_sizes]
        count = 0
        frozen = FrozenUpstream(self.upstream)
        for batch in self.batches(cuts, max_duration, shuffle=False)(0):
            if batch.hidden_states is not None:
                states, lengths = batch.hidden_states, batch.lengths
            else:
                with torch.inference_mode():
                    states, lengths = run_upstream(frozen, batch.wavs, batch.wav_lens, batch.cuts,
                                                   self.sequence)
            mask = padding_mask(lengths, states[0].shape[1])
            for k, h in enumerate(states):
                valid = h[mask].double()
                sums[k] += valid.sum(0)
                squares[k] += (valid ** 2).sum(0)
            count += int(lengths.sum())
        if count == 0:
            raise SpeechrepError(f"{self.name}: no frames in the train split to compute corpus statistics")
        means = [s / count for s in sums]
        stds = [torch.sqrt((q / count - m ** 2).clamp(min=0.0)) + 1e-5 for q, m in zip(squares, means)]
        return CorpusNormalizer(means, stds)

    def encoder(self, tuning: TuningStrategy, layers: list[int] | None,
                normalizer: CorpusNormalizer | None = None) -> FeatureEncoder:
        """The module mapping a FeatureBatch to weighted-sum features for this upstream, tuned by `tuning`."""
        return FeatureEncoder(self.upstream, tuning, layers, normalizer, base_fingerprint=self.fingerprint,
                              sequence=self.sequence)


def condition_others(cuts: CutSet) -> list[Other]:
    """The utterances of a split as babble sources: (id, speaker, audio loader)."""
    def speaker(cut: Any) -> str | None:
        return cut.supervisions[0].speaker if cut.supervisions else None

    return [(cut.id, speaker(cut), lambda cut=cut: cut.load_audio()[0]) for cut in cuts]


def distorted_audio(cuts: CutSet, condition: Condition | Sequence[Condition],
                    others: Sequence[Other] | None = None) -> tuple[Tensor, Tensor]:
    """Padded (B, T) float32 audio of the cuts under `condition` (or one condition per cut; seeded per cut
    id) and the lengths."""
    each = [condition] * len(cuts) if isinstance(condition, Condition) else list(condition)
    wavs = [torch.from_numpy(c.apply(cut.load_audio()[0], cut.id, int(cut.sampling_rate), others))
            for c, cut in zip(each, cuts)]
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


def _safe(name: str) -> str:
    """A folder-name-safe version of an upstream name or path."""
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in name.strip("/"))[-80:]

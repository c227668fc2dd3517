"""The one feature store: what `speechrep extract` writes, the benchmark's cache reads (and writes)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from downstream_corpus import make_corpus

from speechrep import load_upstream
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureCache
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.upstream.extract import extract_features
from speechrep.upstream.feature_store import FeatureStore, upstream_fingerprint
from speechrep.upstream.loading import export_upstream


def test_the_benchmark_cache_reads_what_extract_wrote(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", ("ks",))
    torch.manual_seed(0)
    model = load_upstream(export_upstream(load_upstream("hubert_tiny", dropout=0.0, attention_dropout=0.0),
                                          tmp_path / "model", {"test": True}))
    layers = range(len(model.hidden_sizes))
    cuts = load_cuts(corpus, "ks", "dev")
    summary = extract_features(model, [corpus / "ks" / "dev.jsonl.gz"], tmp_path / "feats", precision="fp16",
                               progress=False)
    assert summary.written == len(cuts) and not summary.failures

    extracted = FeatureCache.from_store(tmp_path / "feats", model)
    assert len(extracted.missing(cuts)) == 0  # found by cut key, though stored under the cut ids
    computed = FeatureCache(tmp_path / "cache")
    computed.fill(cuts, model, torch.device("cpu"))
    states, lengths = extracted.read(cuts, len(layers))
    reference, reference_lengths = computed.read(cuts, len(layers))
    assert torch.equal(lengths, reference_lengths)
    for ours, theirs in zip(states, reference):
        torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=2e-3)  # fp16 rounding of both, batching
    # the benchmark's own cache folder is a store of the same format, with its settings recorded
    FeatureStore.open(tmp_path / "cache").check_suits(upstream_fingerprint(model), layers, "fp16")

    with pytest.raises(SpeechrepError, match="not in the feature store"):
        extracted.fill(load_cuts(corpus, "ks", "test"), model, torch.device("cpu"))
    with pytest.raises(ConfigError, match="features of another upstream"):
        FeatureCache.from_store(tmp_path / "feats", load_upstream("hubert_tiny"))


def test_a_store_without_every_layer_or_settings_is_refused(tmp_path: Path) -> None:
    model = load_upstream("fbank_raw")
    wav = tmp_path / "a.wav"
    from speechrep.audio.io import save_audio

    save_audio(wav, 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(0)), 16000)
    extract_features(model, [wav], tmp_path / "feats", layers=[0], progress=False)
    store = FeatureStore.open(tmp_path / "feats")
    store.check_suits(upstream_fingerprint(model), [0], "fp32")
    with pytest.raises(ConfigError, match="lacks \\[1\\]"):
        store.check_suits(upstream_fingerprint(model), [0, 1])
    with pytest.raises(ConfigError, match="stored as fp32, this run wants fp16"):
        store.check_suits(upstream_fingerprint(model), [0], "fp16")
    with pytest.raises(ConfigError, match="no such folder"):
        FeatureStore.open(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="not a feature store"):
        FeatureStore.open(tmp_path)


def test_a_writer_also_writes_a_shard_after_its_time_bound(tmp_path, monkeypatch) -> None:
    import speechrep.upstream.feature_store as feature_store
    from speechrep.upstream.feature_store import FeatureStore

    clock = iter([0.0, 1.0, 31.0, 32.0])  # each add reads the clock once or twice
    monkeypatch.setattr(feature_store.time, "monotonic", lambda: next(clock))
    writer = FeatureStore(tmp_path).writer(max_shard_bytes=2**30, max_shard_seconds=30.0)
    writer.add("a", {0: torch.zeros(3, 4)}, frames=3)  # starts the queue at 0 s, checks at 1 s
    assert not list(tmp_path.glob("shard-*.json"))
    writer.add("b", {0: torch.zeros(3, 4)}, frames=3)  # 31 s after the queue started: written now
    assert len(list(tmp_path.glob("shard-*.json"))) == 1


def test_fingerprint_of_a_model_with_batch_norm_counts_its_scalar_buffers() -> None:
    # BatchNorm's num_batches_tracked is a 0-dim int64 buffer (the BYOL-A encoder family has BatchNorm)
    model = load_upstream("byol_a_tiny")
    assert any(t.dim() == 0 for t in model.state_dict().values())
    first = upstream_fingerprint(model)
    assert first == upstream_fingerprint(copy.deepcopy(model)) and len(first) == 16
    next(b for n, b in model.named_buffers() if n.endswith("num_batches_tracked")).add_(1)
    assert upstream_fingerprint(model) != first

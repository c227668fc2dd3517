"""QbE, query-by-example spoken term detection (SUPERB; QUESST 2014 English): per-layer DTW, MTWV and MAP.

Nothing is trained. For every layer of the upstream (or the layers in `layers`), each spoken query is matched
against every document by subsequence DTW on cosine distances of that layer's frames
(`speechrep.downstream.dtw`); scores are z-normalised per query, then scored against the ground truth
`<subset>/<split>_truth.txt` (`query_id document_id 1|0`). The layer with the best dev MTWV (MAP breaks
ties) is the one reported on test. Files: `<split>_queries.jsonl.gz` (queries) and `<split>.jsonl.gz`
(documents); a corpus without a train split (QUESST) is fine. Reported: `mtwv` and `map` of the chosen layer,
`layer` (its index) and `mtwv_layer<k>` for every layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from lhotse import CutSet
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from speechrep.data.batching import load_cuts
from speechrep.downstream.dtw import normalize_query_scores, qbe_scores
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.metrics import maximum_term_weighted_value, mean_average_precision
from speechrep.downstream.tasks import TaskParts, TaskSpec
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig, to_device


@dataclass
class QbEConfig:
    """SUPERB QbE: no training; subsequence DTW per layer, the layer picked by dev MTWV."""

    subset: str = "qbe"
    layers: list[int] | None = None  # layers to try; None: every layer
    max_duration: float = 200.0  # seconds of audio per feature batch
    upstream_lr: float = 1e-5  # unused: nothing is trained
    layer_weights_lr: float | None = None  # unused: nothing is trained
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1))  # unused: nothing is trained


@dataclass
class Truth:
    """One split's queries, documents and (queries × documents) 0/1 labels."""

    queries: list[str]
    documents: list[str]
    labels: np.ndarray


def read_truth(path: Path, queries: list[str], documents: list[str]) -> Truth:
    """The ground truth of `query_id document_id 1|0` lines; pairs not listed count as 0."""
    if not path.is_file():
        raise SpeechrepError(f"{path}: no ground truth (lines `query_id document_id 1|0`)")
    query_index = {q: i for i, q in enumerate(queries)}
    document_index = {d: j for j, d in enumerate(documents)}
    labels = np.zeros((len(queries), len(documents)), dtype=bool)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise SpeechrepError(f"{path}:{number}: expected `query_id document_id 1|0`, got {line!r}")
        if fields[0] not in query_index or fields[1] not in document_index:
            raise SpeechrepError(f"{path}:{number}: unknown query or document {fields[0]!r}, {fields[1]!r}")
        labels[query_index[fields[0]], document_index[fields[1]]] = fields[2] == "1"
    return Truth(queries, documents, labels)


def layer_scores(query_states: list[list[Tensor]], document_states: list[list[Tensor]],
                 layer: int) -> np.ndarray:
    """(queries, documents) z-normalised DTW scores of one layer; a state is a cut's list of (T, H) layers."""
    documents = pad_sequence([d[layer].float() for d in document_states], batch_first=True)
    lengths = torch.tensor([d[layer].shape[0] for d in document_states])
    scores = torch.stack([qbe_scores(q[layer].float(), documents, lengths) for q in query_states])
    return normalize_query_scores(scores).numpy()


def build(cfg: QbEConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Dev queries + documents as the dev split; evaluate = DTW per layer, MTWV/MAP, layer chosen on dev."""
    subset_dir = Path(corpus_dir) / cfg.subset

    def split(name: str) -> tuple[CutSet, Truth]:
        queries = load_cuts(corpus_dir, cfg.subset, f"{name}_queries")  # a directory or Shar
        documents = load_cuts(corpus_dir, cfg.subset, name)
        truth = read_truth(subset_dir / f"{name}_truth.txt", list(queries.ids), list(documents.ids))
        return queries + documents, truth

    dev_cuts, dev_truth = split("dev")
    truths = {"dev": dev_truth}  # the test truth is read only by `load_test`, after the dev evaluation
    num_layers = len(features.hidden_sizes)
    layers = list(range(num_layers)) if cfg.layers is None else list(cfg.layers)
    if not layers or any(not 0 <= k < num_layers for k in layers):
        raise SpeechrepError(f"qbe: layers {cfg.layers} outside 0..{num_layers - 1} of {features.name}")
    chosen: dict[str, int] = {}  # the layer picked on dev

    def states_of(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, list[Tensor]]:
        """Every cut's hidden states, one (T, H) tensor per layer (normalised as the trained tasks' input)."""
        encoder = model.encoder
        states: dict[str, list[Tensor]] = {}
        for batch in batches:
            hidden, lengths = encoder.hidden_states(batch)
            if encoder.normalizer is not None:
                hidden = encoder.normalizer(hidden, lengths)
            for i, (cut_id, n) in enumerate(zip(batch.cuts.ids, lengths.tolist())):
                states[cut_id] = [h[i, :n].cpu() for h in hidden]
        return states

    def per_layer(states: dict[str, list[Tensor]], truth: Truth) -> dict[int, tuple[float, float]]:
        queries = [states[q] for q in truth.queries]
        documents = [states[d] for d in truth.documents]
        results = {}
        for k in layers:
            scores = layer_scores(queries, documents, k)
            results[k] = (maximum_term_weighted_value(scores, truth.labels),
                          mean_average_precision(scores, truth.labels))
        return results

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        states = states_of(model, batches)
        # The split being evaluated is the one whose queries and documents are all among the cuts.
        name = next((n for n, t in truths.items() if all(c in states for c in t.queries + t.documents)), None)
        if name is None:
            raise SpeechrepError(f"QbE: no ground truth ({', '.join(truths)}) matches the evaluated cuts")
        results = per_layer(states, truths[name])
        if name == "dev":
            chosen["layer"] = max(layers, key=lambda k: results[k])  # MTWV first, MAP breaks ties
        elif "layer" not in chosen:  # test before any dev evaluation: pick the layer on dev first
            device = next(model.parameters()).device
            dev_batches = features.batches(dev_cuts, cfg.max_duration, shuffle=False)(0)
            dev_results = per_layer(states_of(model, (to_device(b, device) for b in dev_batches)), dev_truth)
            chosen["layer"] = max(layers, key=lambda k: dev_results[k])
        best = chosen["layer"]
        return {"mtwv": results[best][0], "map": results[best][1], "layer": float(best),
                **{f"mtwv_layer{k}": results[k][0] for k in layers}}

    def load_test() -> CutSet:
        test_cuts, truths["test"] = split("test")
        return test_cuts

    # QbE trains nothing (TaskSpec.trains=False). The dev documents stand in for a train split, which QUESST
    # lacks, only where the runner needs one: corpus statistics for `fbank_global`.
    document_ids = set(dev_truth.documents)
    documents = dev_cuts.filter(lambda c: c.id in document_ids).to_eager()
    return TaskParts(nn.Identity(), documents, dev_cuts, load_test, _no_loss, evaluate)


def _no_loss(model: nn.Module, batch: FeatureBatch) -> Tensor:
    """Never called: the runner skips training for a task with `trains=False`."""
    raise SpeechrepError("QbE has nothing to train")


TASK = TaskSpec(name="qbe", config=QbEConfig, build=build, metric="mtwv", higher_is_better=True,
                best_value=1.0, trains=False, other_test_splits=False)

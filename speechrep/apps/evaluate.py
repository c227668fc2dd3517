"""Evaluation of synthesised and converted speech (`speechrep vc-eval`): MCD, PER, speaker similarity.

The items are the rows of a tab-separated file with a header naming some of these columns:

    converted        the wave to judge (required)
    target_speaker   the speaker it should sound like (for speaker similarity)
    source_speaker   the speaker of the source utterance (similarity against the source)
    reference        a parallel recording of the same content (for MCD; copy-synthesis: the original)
    phones           the spoken phone sequence, space-separated (for PER)

- MCD: mel-cepstral distortion (dB, `spectral.mel_cepstral_distortion`, DTW-aligned) against `reference`.
- Intelligibility: PER of the project's own phone recogniser, a `pr` run of `speechrep benchmark` trained on
  clean speech (`--pr-run BENCH/<upstream>/pr` with the `--pr-upstream` it was trained on).
- Speaker similarity: an `asv` run's x-vector embeddings, cosine-scored like its trials, each converted
  utterance against every reference file of a speaker (`speaker<TAB>path` lines); accepted when the score
  reaches the threshold at which the run's dev trials have equal false-alarm and miss rates. Reported: the
  accept rate against the target speaker (higher: converted) and against the source speaker (lower: the
  source voice is gone), and the mean cosine scores.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from sklearn.metrics import roc_curve
from torch import Tensor

from speechrep.audio import load_audio
from speechrep.audio.synthesis import SAMPLE_RATE, mel_cepstral_distortion
from speechrep.config import load_config
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import DownstreamModel, FeatureSource
from speechrep.downstream.runner import FROZEN, load_upstream_module, parse_upstream
from speechrep.downstream.tasks import TaskParts, get_task
from speechrep.downstream.tasks.asv import read_trials
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.train import load_checkpoint

COLUMNS = ("converted", "target_speaker", "source_speaker", "reference", "phones")
BATCH_SECONDS = 60.0


@dataclass
class EvalItem:
    """One utterance to judge and what it is judged against."""

    converted: Path
    target_speaker: str | None = None
    source_speaker: str | None = None
    reference: Path | None = None
    phones: list[str] | None = None


def read_items(path: Path) -> list[EvalItem]:
    """The rows of an evaluation file (see the module docstring); paths are relative to the file's folder."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such evaluation file")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    header = list(rows[0]) if rows else []
    if "converted" not in header or set(header) - set(COLUMNS):
        raise ConfigError(f"{path}: the header must name 'converted' and only columns among "
                          f"{', '.join(COLUMNS)}")

    def resolve(value: str | None) -> Path | None:
        return None if not value else (path.parent / value if not Path(value).is_absolute() else Path(value))

    return [EvalItem(resolve(r["converted"]), r.get("target_speaker") or None,
                     r.get("source_speaker") or None, resolve(r.get("reference")),
                     (r.get("phones") or "").split() or None) for r in rows]


def file_cuts(paths: Sequence[Path], phones: Sequence[list[str] | None] | None = None) -> CutSet:
    """One cut per audio file (ids `f00000`, ...), with its phones as the PR task's label when given."""
    cuts = []
    for i, path in enumerate(paths):
        load_audio(path, SAMPLE_RATE)  # a one-line AudioError for an unreadable file, before any model runs
        rec = Recording.from_file(path, recording_id=f"f{i:05d}")
        custom = {"phones": list(phones[i])} if phones is not None and phones[i] else None
        sup = SupervisionSegment(f"f{i:05d}", rec.id, 0.0, rec.duration, speaker="x", custom=custom)
        cuts.append(MonoCut(f"f{i:05d}", 0.0, rec.duration, 0, recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


class TrainedTask:
    """A finished `speechrep benchmark` run of one task, rebuilt with its best-on-dev weights."""

    def __init__(self, task: str, run_dir: Path, upstream: str, corpus: Path):
        self.spec, self.corpus = get_task(task), corpus
        config = run_dir / "config.yaml"
        best = run_dir / "checkpoints" / "best.pt"
        if not config.is_file() or not best.is_file():
            raise ConfigError(f"{run_dir}: not a finished {task} run (needs config.yaml and "
                              "checkpoints/best.pt)")
        self.cfg = load_config(self.spec.config, config)
        choice = parse_upstream(upstream)
        self.source = FeatureSource(choice.label, load_upstream_module(choice))
        self.parts: TaskParts = self.spec.build(self.cfg, corpus, self.source)
        normalizer = self.source.corpus_normalizer(self.parts.train_cuts) if choice.corpus_norm else None
        encoder = self.source.encoder(FROZEN, self.cfg.layers, normalizer)
        self.model = DownstreamModel(encoder, self.parts.head)
        load_checkpoint(best, self.model)
        self.model.eval()
        self.eer: tuple[float, float] | None = None  # an ASV run's (EER, threshold) on its dev trials, once

    def batches(self, cuts: CutSet):
        """Feature batches of `cuts` in order, computed live (never through a cache)."""
        return self.source.batches(cuts, BATCH_SECONDS, shuffle=False, live=True)(0)


def phone_error_rate(pr: TrainedTask, paths: Sequence[Path], phones: Sequence[list[str]]) -> float:
    """PER of the PR run on the files against their phone sequences."""
    with torch.inference_mode():
        return float(pr.parts.evaluate(pr.model, pr.batches(file_cuts(paths, phones)))["per"])


def embeddings(asv: TrainedTask, paths: Sequence[Path]) -> Tensor:
    """ASV embeddings (N, E) of the files, in order."""
    cuts = file_cuts(paths)
    found: dict[str, Tensor] = {}
    with torch.inference_mode():
        for batch in asv.batches(cuts):
            vectors, _ = asv.model(batch)
            found.update(zip(batch.cuts.ids, vectors.float()))
    return torch.stack([found[c.id] for c in cuts])


def eer_threshold(asv: TrainedTask, split: str = "dev") -> tuple[float, float]:
    """(EER, threshold) of the ASV run on its corpus's trials of `split`: where misses equal false alarms."""
    subset = asv.cfg.subset
    cuts = load_cuts(asv.corpus, subset, split)
    trials = read_trials(asv.corpus / subset / f"{split}_trials.txt")
    found: dict[str, Tensor] = {}
    with torch.inference_mode():
        for batch in asv.batches(cuts):
            vectors, _ = asv.model(batch)
            found.update(zip(batch.cuts.ids, vectors.float()))
    scores = np.array([float(F.cosine_similarity(found[a], found[b], dim=0)) for _, a, b in trials])
    labels = np.array([label for label, _, _ in trials])
    if labels.min() == labels.max():
        raise SpeechrepError(f"{asv.corpus / subset}/{split}_trials.txt: needs target and non-target trials")
    false_alarm, hit, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmin(np.abs((1 - hit) - false_alarm)))  # the ROC point where misses equal false alarms
    return float((1 - hit[i] + false_alarm[i]) / 2), float(thresholds[i])


def similarity(converted: Tensor, references: dict[str, Tensor], speakers: Sequence[str | None],
               threshold: float) -> tuple[float, float]:
    """(accept rate, mean cosine) of each converted embedding against every reference of its speaker."""
    accepted, scores = [], []
    for vector, speaker in zip(converted, speakers):
        if speaker is None:
            continue
        if speaker not in references:
            raise ConfigError(f"speaker {speaker!r}: no reference files given (--speakers)")
        cos = F.cosine_similarity(references[speaker], vector[None], dim=-1)
        accepted += (cos >= threshold).tolist()
        scores += cos.tolist()
    return (float(np.mean(accepted)), float(np.mean(scores))) if scores else (float("nan"), float("nan"))


def evaluate_items(items: Sequence[EvalItem], speakers: dict[str, list[Path]] | None = None,
                   pr: TrainedTask | None = None, asv: TrainedTask | None = None) -> dict[str, Any]:
    """MCD, PER and speaker similarity of the items, each where the items and the models allow it."""
    if not items:
        raise SpeechrepError("vc-eval: nothing to evaluate")
    results: dict[str, Any] = {"items": len(items)}
    with_ref = [it for it in items if it.reference is not None]
    if with_ref:
        mcds = [mel_cepstral_distortion(load_audio(it.converted, SAMPLE_RATE)[0],
                                        load_audio(it.reference, SAMPLE_RATE)[0]) for it in with_ref]
        results["mcd_db"] = float(np.nanmean(mcds))
    with_phones = [it for it in items if it.phones]
    if pr is not None and with_phones:
        results["per"] = phone_error_rate(pr, [it.converted for it in with_phones],
                                          [it.phones for it in with_phones])
    if asv is not None and speakers:
        if asv.eer is None:
            asv.eer = eer_threshold(asv)
        eer, threshold = asv.eer
        results.update(asv_dev_eer=eer, asv_threshold=threshold)
        vectors = embeddings(asv, [it.converted for it in items])
        references = {s: embeddings(asv, paths) for s, paths in speakers.items()}
        for side in ("target", "source"):
            rate, mean = similarity(vectors, references, [getattr(it, f"{side}_speaker") for it in items],
                                    threshold)
            if rate == rate:  # not NaN: the items name this side's speakers
                results[f"{side}_accept"], results[f"{side}_cosine"] = rate, mean
    return results


def read_speakers(path: Path) -> dict[str, list[Path]]:
    """`speaker<TAB>path` lines → speaker → reference files (relative paths: to the file's folder)."""
    from speechrep.apps.convert import read_table

    speakers: dict[str, list[Path]] = {}
    for speaker, file in read_table(path, (2, 2), "speaker<TAB>reference_path"):
        speakers.setdefault(speaker, []).append(path.parent / file)  # an absolute `file` stays as it is
    return speakers

"""VC, any-to-one voice conversion (SUPERB-SG; VCC 2020 task 1): a decoder from features to the target's mel.

Training reads only the target speaker's speech (`<subset>/train`, optionally filtered to `target_speaker`):
the decoder learns to predict each utterance's own log-mel (the shared analysis of
`speechrep.audio.synthesis`: 80 mel bins every 10 ms; hop/160 of them per feature frame) from the upstream's
features, so at test time a source speaker's features come out in the target's voice. SUPERB-SG's decoder is
Tacotron 2's autoregressive one; this head is non-autoregressive (input projection, 1-D convolutions, a
BiLSTM, a linear output), enough to compare upstreams at a fraction of the cost.

Evaluation (dev picks the checkpoint, test once): each source cut names the target speaker's parallel
utterance of the same sentence in `custom["target_audio"]` (a path); the metric is the mel-cepstral
distortion (dB, c1..c24, DTW-aligned) between the predicted log-mel and that reference's. A cut without
`target_audio` is scored against its own audio (reconstruction, for a target speaker's held-out speech).
`speechrep.apps.parallel.make_parallel_corpus` writes this layout from the synthetic speakers, and
`speechrep prepare vcc2020` from VCC 2020 task 1 (one `vc_<target>` subset per target speaker: train the
target's utterances; dev/test the source speakers' parallel sentences, `target_audio` pointing at the
target's recording of each; docs/synthesis.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.audio import load_audio
from speechrep.audio.synthesis import HOP, NUM_MELS, cepstral_distortion, log_mel, mel_cepstrum_of_log_mel
from speechrep.data.batching import load_cuts
from speechrep.downstream.features import FeatureBatch, FeatureSource
from speechrep.downstream.heads import _run_lstm  # the heads' LSTM over valid frames only
from speechrep.downstream.tasks import TaskParts, TaskSpec, cut_label
from speechrep.errors import SpeechrepError
from speechrep.train import TrainConfig
from speechrep.upstream.base import padding_mask


@dataclass
class VCConfig:
    """Any-to-one VC: conv + BiLSTM mel decoder, L1 on log-mel, AdamW lr 1e-3; MCD on dev picks the best."""

    subset: str = "vc"
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 40.0  # seconds of audio per batch
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of the train split (low-resource runs)
    target_speaker: str | None = None  # train only on this speaker's cuts (None: every train cut)
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=10_000, lr=1e-3, schedule="cosine", eval_every=1000, log_every=100))


class MelDecoder(nn.Module):
    """Features (B, T, H) → log-mels (B, T·r, 80): projection, two convolutions, a BiLSTM, a linear output."""

    def __init__(self, input_size: int, mels_per_frame: int, hidden_size: int, num_layers: int,
                 dropout: float):
        super().__init__()
        self.mels_per_frame = mels_per_frame
        self.proj = nn.Linear(input_size, hidden_size)
        self.convs = nn.ModuleList(nn.Conv1d(hidden_size, hidden_size, 5, padding=2) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(2))
        self.lstm = nn.LSTM(hidden_size, hidden_size // 2, num_layers, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, mels_per_frame * NUM_MELS)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        mask = padding_mask(lengths.to(features.device), features.shape[1])[..., None].to(features.dtype)
        x = self.proj(features) * mask
        for conv, norm in zip(self.convs, self.norms):
            x = x + self.dropout(F.gelu(norm(conv(x.transpose(1, 2)).transpose(1, 2)))) * mask
        x = _run_lstm(self.lstm, x, lengths)
        mels = self.out(self.dropout(x))
        return mels.reshape(mels.shape[0], -1, NUM_MELS)


def _reference_audio(cut) -> Tensor:  # noqa: ANN001 - a lhotse cut
    """The parallel target utterance of a source cut, or the cut's own audio."""
    custom = (cut.supervisions[0].custom or {}) if cut.supervisions else {}
    path = custom.get("target_audio")
    if path is None:
        return torch.from_numpy(cut.load_audio()[0]).float()
    return load_audio(path)[0]


def build(cfg: VCConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """The target speaker's train cuts, a mel decoder, L1 log-mel loss, MCD against parallel references."""
    train_cuts = load_cuts(corpus_dir, cfg.subset, "train")
    if cfg.target_speaker is not None:
        train_cuts = train_cuts.filter(lambda c: cut_label(c, "speaker") == cfg.target_speaker).to_eager()
    if len(train_cuts) == 0:
        raise SpeechrepError(f"{corpus_dir / cfg.subset}: no train cuts of target speaker "
                             f"{cfg.target_speaker!r}")
    dev_cuts = load_cuts(corpus_dir, cfg.subset, "dev")
    if features.stride % HOP:
        raise SpeechrepError(f"VC: feature stride {features.stride} is not a multiple of the mel hop {HOP}")
    head = MelDecoder(features.hidden_size, features.stride // HOP, cfg.hidden_size, cfg.num_layers,
                      cfg.dropout)

    def loss_fn(model: nn.Module, batch: FeatureBatch) -> Tensor:
        predicted, _ = model(batch)
        total, count = predicted.new_zeros(()), 0
        for mels, cut in zip(predicted, batch.cuts):
            target = log_mel(torch.from_numpy(cut.load_audio()[0]).float().to(mels.device))
            n = min(len(target), len(mels))
            total = total + (mels[:n] - target[:n]).abs().sum()
            count += n * NUM_MELS
        return total / count

    def evaluate(model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        scores = []
        for batch in batches:
            predicted, lengths = model(batch)
            for mels, n, cut in zip(predicted, lengths.tolist(), batch.cuts):
                estimate = mel_cepstrum_of_log_mel(mels[:n * head.mels_per_frame].float().cpu())
                reference = mel_cepstrum_of_log_mel(log_mel(_reference_audio(cut)))
                scores.append(cepstral_distortion(estimate, reference))
        if not scores:
            raise SpeechrepError("VC: nothing to evaluate")
        return {"mcd": float(torch.tensor(scores).nanmean())}

    return TaskParts(head, train_cuts, dev_cuts, lambda: load_cuts(corpus_dir, cfg.subset, "test"),
                     loss_fn, evaluate)


TASK = TaskSpec(name="vc", config=VCConfig, build=build, metric="mcd", higher_is_better=False,
                best_value=0.0, percent=False)

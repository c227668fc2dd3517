"""vq-wav2vec pre-training (Baevski et al. 2020, https://arxiv.org/abs/1910.05453): wav2vec's objective
(K = 12 future steps, 10 distractors from the same utterance, binary cross-entropy;
`speechrep.pretrain.wav2vec`) on quantized features: the encoder output goes through a Gumbel-softmax or
online k-means quantizer (G = 2 groups × V = 320 entries) before the context network, and the quantized
vectors are also the targets.

- Gumbel (`upstream: vq_wav2vec`): hard Gumbel-softmax with straight-through gradients, temperature
  max(2 · 0.999995^update, 0.5); fairseq's recipe adds no diversity term (`quantizer_weight: 0`).
- k-means (`upstream: vq_wav2vec_kmeans`): nearest entry per group, straight-through; loss + 1 · (‖sg(z) − ẑ‖²
  + γ‖z − sg(ẑ)‖²), γ = 0.25 (fairseq `--loss-weights [1]`, mean squared errors).

Codebook use is logged: `code_perplexity` (Gumbel: of the softmax probabilities, fairseq's prob_perplexity;
k-means: of the chosen codes), `code_usage` its share of G·V, with a warning when the codebook collapses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError
from speechrep.pretrain.common import PretrainData, run_pretraining
from speechrep.pretrain.wav2vec import Wav2VecObjective
from speechrep.train import TrainConfig
from speechrep.upstream.loading import load_upstream


@dataclass
class Config:
    """Gumbel vq-wav2vec on LibriSpeech 960 h (fairseq README): Adam, 1000 warm-up updates to 1e-5, cosine."""

    upstream: str = "vq_wav2vec"  # or vq_wav2vec_kmeans
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config
    prediction_steps: int = 12
    num_negatives: int = 10
    first_step: int = 1  # the paper's k = 1..K (fairseq's auto offset: 3)
    balanced_classes: bool = False  # weigh each distractor by 1/λ (see speechrep.pretrain.wav2vec)
    quantizer_weight: float = 0.0  # Gumbel: 0 (no diversity term); k-means: 1
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=18.75, max_utterance=9.375, min_utterance=1.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=400_000, lr=1e-5, warmup_steps=1000, schedule="cosine",
                                            clip_norm=None, eval_every=5000, log_every=200)
    )


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train vq-wav2vec on the unlabeled audio `data`; returns the exported upstream directory."""
    upstream = load_upstream(cfg.upstream, **cfg.model)
    if upstream.config.vq_type == "none":
        raise ConfigError(f"vq_wav2vec: {cfg.upstream} has no quantizer (vq_type none); "
                          "use the wav2vec method")
    objective = Wav2VecObjective(upstream, cfg.prediction_steps, cfg.num_negatives, cfg.first_step,
                                 cfg.quantizer_weight, (cfg.gumbel_start, cfg.gumbel_end, cfg.gumbel_decay),
                                 cfg.balanced_classes)
    return run_pretraining("vq_wav2vec", objective, upstream, cfg, data, run_dir,
                           after_step=lambda model, step: model.after_step(step))

"""OOD-ASR (SUPERB-SG): ASR on domains the upstream was not pre-trained on, one ASR head per domain.

Each domain is a corpus of its own, `CORPUS/<subset>/<domain>/{train,dev,test}.jsonl.gz` (subset `ood_asr`):
`speechrep synth --subsets ood_asr` makes `es`, `de`, `fr` (eSpeak voices of the language reading words of its
wordfreq list) and `spontaneous` (English with fillers, repeated words and pauses); `speechrep prepare
common_voice --lang es|zh-CN|ar` and `speechrep prepare sbcsae` make SUPERB-SG's own domains (`es`, `zh-CN`,
`ar`, `sbcsae`). `domains` picks the ones to run (`ood_asr.domains=[es,zh-CN,ar,sbcsae]`).

Every domain is a sub-run (its own run directory) of the ASR task's recipe (`asr.build`): a character
vocabulary from that domain's train split, its own learned weighted sum of layers and 2-layer BiLSTM + CTC
head, greedy decoding, CER and WER. SUPERB-SG trains and reports each domain separately; the headline is the
mean CER over the domains. results.json: `test`/`dev` hold the means (CER, WER), `sub_runs.<domain>` each
domain's numbers. Where a domain's transcripts have no spaces (Common Voice zh-CN), its WER counts whole
sentences.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from speechrep.data.synth.subsets import OOD_ASR_DOMAINS, SPLITS
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import TaskParts, TaskSpec, asr
from speechrep.errors import ConfigError
from speechrep.train import TrainConfig


@dataclass
class OODASRConfig:
    """SUPERB-SG OOD-ASR: the SUPERB ASR head and schedule, trained and tested on each domain separately."""

    subset: str = "ood_asr"  # the domains are CORPUS/<subset>/<domain>/
    domains: list[str] = field(default_factory=lambda: list(OOD_ASR_DOMAINS))  # one run each
    domain: str | None = None  # set per run by `sub_runs`
    layers: list[int] | None = None  # None: learned weighted sum of every layer
    max_duration: float = 400.0  # seconds of audio per batch (about 32 utterances)
    upstream_lr: float = 1e-5  # the upstream's lr when the tuning trains it (--tuning full)
    layer_weights_lr: float | None = None  # the learned layer weights' lr (None: the head's)
    train_fraction: float = 1.0  # a seeded share of each domain's train split (low-resource runs)
    hidden_size: int = 1024
    num_layers: int = 2
    dropout: float = 0.2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=200_000, lr=1e-4, schedule="constant", eval_every=2000, log_every=100))


def sub_runs(cfg: OODASRConfig) -> dict[str, OODASRConfig]:
    """One run per domain."""
    if not cfg.domains or len(set(cfg.domains)) != len(cfg.domains) or not all(cfg.domains):
        raise ConfigError(f"ood_asr.domains: expected distinct domain names, got {cfg.domains}")
    return {domain: replace(cfg, domain=domain) for domain in cfg.domains}


def check_domains(corpus_dir: Path, subset: str, domains: list[str]) -> None:
    """A one-line ConfigError for the first domain without its three manifests, naming the ones there are."""
    root = Path(corpus_dir) / subset
    present = lambda d: all((d / f"{split}.jsonl.gz").is_file() for split in SPLITS)  # noqa: E731
    for domain in domains:
        if not present(root / domain):
            found = [d.name for d in sorted(root.iterdir()) if present(d)] if root.is_dir() else []
            raise ConfigError(
                f"ood_asr: no domain {domain!r} in {root} (it needs {domain}/{{train,dev,test}}.jsonl.gz; "
                f"found: {', '.join(found) or 'none'}); make it with `speechrep synth --subsets ood_asr` "
                f"({', '.join(OOD_ASR_DOMAINS)}), `speechrep prepare common_voice --lang LANG` or `speechrep "
                "prepare sbcsae`, or choose others with ood_asr.domains=[...]")


def build(cfg: OODASRConfig, corpus_dir: Path, features: FeatureSource) -> TaskParts:
    """Every domain present (so a missing one fails before any trains), then the ASR task on `cfg.domain`."""
    if cfg.domain is None:
        raise ConfigError("ood_asr: no domain set (the runner sets one per sub-run from `domains`)")
    check_domains(corpus_dir, cfg.subset, cfg.domains)
    return asr.build(replace(cfg, subset=f"{cfg.subset}/{cfg.domain}"), corpus_dir, features)


TASK = TaskSpec(name="ood_asr", config=OODASRConfig, build=build, metric="cer", higher_is_better=False,
                best_value=0.0, sub_runs=sub_runs, frame_level=True)

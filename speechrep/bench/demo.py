"""The main job: unlabeled speech in, SSL models out, and proof that their representations beat hand-made features.

    speechrep demo --out demo_out            # make demo

Stages (each resumes: running the command again skips what is finished and continues what is not):
1. corpus — the mini-SUPERB synthetic corpus (`speechrep synth`), only the subsets the demo uses;
2. pre-training — each model of `configs/demo.yaml` with its `demo` preset (HuBERT-style methods first fit
   their k-means targets with `speechrep kmeans`);
3. benchmark — every pre-trained model, its untrained control (same architecture, random weights) and both
   FBANK baselines on the demo tasks (`speechrep benchmark`), leaderboard + SUPERB-style score;
4. report — `report.html` (`speechrep report`).
Layout: OUT/corpus/, OUT/kmeans/<model>/, OUT/pretrain/<model>/ (run dirs, OUT/pretrain/<model>/upstream is
the export), OUT/bench/ (benchmark), OUT/demo.json (stages, commands, wall times), OUT/report.html.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from speechrep.config import atomic_write_text, config_to_dict, load_config

log = logging.getLogger(__name__)

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@dataclass
class DemoModel:
    """One model to pre-train: its row name, method, preset and (HuBERT-style methods) k-means targets."""

    name: str = "melhubert"
    method: str = "melhubert"
    preset: str = "demo"
    overrides: list[str] = field(default_factory=list)  # extra key=value for its pre-training config
    kmeans_features: str = ""  # e.g. "mfcc": fit k-means targets on these features first (empty: no targets)
    kmeans_k: int = 100


@dataclass
class DemoConfig:
    """What the demo builds, trains and benchmarks."""

    corpus_preset: str = "small"
    seed: int = 0
    models: list[DemoModel] = field(default_factory=lambda: [DemoModel(), DemoModel("tera", "tera")])
    baselines: list[str] = field(default_factory=lambda: ["fbank", "fbank_global"])
    tasks: list[str] = field(default_factory=lambda: ["pf", "ks", "sid", "asv", "ic", "er"])
    pretrain_overrides: list[str] = field(default_factory=list)  # key=value for every model, e.g. train.max_steps=50
    downstream_preset: str = "demo"
    downstream_overrides: list[str] = field(default_factory=list)  # key=value for every task


# The synthetic subsets each task reads, and the one pre-training reads.
_TASK_SUBSETS = {"pf": "pr", "pr": "pr", "asr": "asr", "ks": "ks", "sid": "sid", "asv": "asv", "ic": "ic",
                 "er": "er", "sf": "sf", "sd": "sd", "se": "se", "ss": "ss", "qbe": "qbe"}


class _Stages:
    """Times each stage and records it (with the equivalent command) in OUT/demo.json as it goes."""

    def __init__(self, out: Path, cfg: DemoConfig):
        self.path = out / "demo.json"
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.record: dict[str, Any] = {"config": config_to_dict(cfg), "stages": previous.get("stages", {})}

    def run(self, name: str, command: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        log.info("demo stage %s: %s", name, command)
        started = time.time()
        result = fn(*args, **kwargs)
        stage = self.record["stages"].setdefault(name, {"command": command, "wall_time_s": 0.0})
        stage["wall_time_s"] = round(stage["wall_time_s"] + time.time() - started, 1)  # summed over resumes
        stage["command"] = command
        atomic_write_text(self.path, json.dumps(self.record, indent=2) + "\n")
        return result


def run_demo(out: Path, corpus_preset: str | None = None, overrides: Sequence[str] = ()) -> str:
    """Run (or resume) the whole demo into `out`; returns the leaderboard text it printed."""
    from speechrep.bench.leaderboard import write_summary
    from speechrep.bench.report import write_report
    from speechrep.data.synth import make_synthetic_corpus
    from speechrep.downstream.runner import benchmark
    from speechrep.pretrain import run_method
    from speechrep.pretrain.kmeans import run_kmeans

    cfg = load_config(DemoConfig, CONFIG_PATH, overrides)
    if corpus_preset is not None:
        cfg.corpus_preset = corpus_preset
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out, cfg)
    corpus = out / "corpus"
    subsets = sorted({"unlabeled"} | {_TASK_SUBSETS[t] for t in cfg.tasks})
    stages.run("corpus", f"speechrep synth --preset {cfg.corpus_preset} --seed {cfg.seed} --subsets "
               f"{','.join(subsets)} --out {corpus}",
               make_synthetic_corpus, corpus, cfg.corpus_preset, seed=cfg.seed, subsets=subsets)

    exports = []
    for model in cfg.models:
        extra = list(cfg.pretrain_overrides) + list(model.overrides)
        if model.kmeans_features:
            labels = out / "kmeans" / model.name
            stages.run(f"kmeans {model.name}", f"speechrep kmeans --features {model.kmeans_features} --data "
                       f"{corpus} --k {model.kmeans_k} --out {labels}",
                       run_kmeans, model.kmeans_features, corpus, model.kmeans_k, labels, seed=cfg.seed)
            extra.append(f"labels={labels}")
        run_dir = out / "pretrain" / model.name
        stages.run(f"pretrain {model.name}", f"speechrep pretrain --method {model.method} --data {corpus} "
                   f"--out {run_dir} --preset {model.preset} {' '.join(extra)}".strip(),
                   run_method, model.method, corpus, run_dir, model.preset, extra)
        exports.append(f"{model.name}={run_dir / 'upstream'}")

    upstreams = list(cfg.baselines) + [u for e in exports for u in (e, e.replace("=", "@random=", 1))]
    bench_out = out / "bench"
    rows = stages.run("benchmark", "speechrep benchmark " + " ".join(f"--upstream {u}" for u in upstreams)
                      + f" --tasks {','.join(cfg.tasks)} --corpus {corpus} --out {bench_out} --preset "
                      f"{cfg.downstream_preset} {' '.join(cfg.downstream_overrides)}".rstrip(),
                      benchmark, upstreams, cfg.tasks, corpus, bench_out, preset=cfg.downstream_preset,
                      overrides=cfg.downstream_overrides)
    table = write_summary(rows, bench_out)
    stages.run("report", f"speechrep report {out}", write_report, out)
    return table

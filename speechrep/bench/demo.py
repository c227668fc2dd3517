"""The main job: unlabeled speech in, SSL models out, and proof that their representations beat hand-made features.

    speechrep demo --out demo_out            # make demo

Stages (each resumes: running the command again skips what is finished and continues what is not):
1. corpus — the mini-SUPERB synthetic corpus (`speechrep synth`), only the subsets the demo uses;
2. pre-training — each model of `configs/demo.yaml` with its `demo` preset (HuBERT-style methods first fit
   their k-means targets with `speechrep kmeans`);
3. benchmark — every pre-trained model, its untrained control (same architecture, random weights) and both
   FBANK baselines on the demo tasks (`speechrep benchmark`), leaderboard + SUPERB-style score;
4. report — `report.html` (`speechrep report`).
Stages 2 and 3 run in `lanes` side by side (by default two, one model each), each a sequence of `speechrep`
commands in child processes with an equal share of the cores (on a 2-core machine one thread each); a lane
that has benchmarked its models takes the FBANK baselines no other lane has taken yet.
Layout: OUT/corpus/, OUT/kmeans/<model>/, OUT/pretrain/<model>/ (run dirs, OUT/pretrain/<model>/upstream is
the export), OUT/bench/ (benchmark), OUT/demo.json (stages, commands, wall times), OUT/report.html.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from speechrep.config import CONFIG_ROOT, config_to_dict, load_config
from speechrep.storage import atomic_write_text
from speechrep.errors import ConfigError, SpeechrepError

log = logging.getLogger(__name__)

CONFIG_PATH = CONFIG_ROOT / "demo.yaml"


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
    models: list[DemoModel] = field(default_factory=lambda: [DemoModel(), DemoModel("apc", "apc")])
    baselines: list[str] = field(default_factory=lambda: ["fbank", "fbank_global"])
    tasks: list[str] = field(default_factory=lambda: ["pf", "ks", "sid", "asv", "ic", "er"])
    pretrain_overrides: list[str] = field(default_factory=list)  # key=value for every model, e.g. train.max_steps=50
    downstream_preset: str = "demo"
    downstream_overrides: list[str] = field(default_factory=list)  # key=value for every task
    lanes: int = 2  # models pre-trained and benchmarked side by side, each lane with its share of the cores


# The synthetic subsets each task reads, and the one pre-training reads.
_TASK_SUBSETS = {"pf": "pr", "pr": "pr", "asr": "asr", "ks": "ks", "sid": "sid", "asv": "asv", "ic": "ic",
                 "er": "er", "sf": "sf", "sd": "sd", "se": "se", "ss": "ss", "qbe": "qbe"}


class _Stages:
    """Times each stage and records it (with the equivalent command) in OUT/demo.json as it goes."""

    def __init__(self, out: Path, cfg: DemoConfig):
        self.path = out / "demo.json"
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.record: dict[str, Any] = {"config": config_to_dict(cfg), "stages": previous.get("stages", {})}
        # the whole demo's wall time up to its last finished stage, summed over resumes (less than the sum of
        # the stages: lanes overlap)
        self.earlier_wall_time = previous.get("wall_time_s", 0.0)
        self.started = time.time()
        self.lock = threading.Lock()  # lanes finish stages concurrently

    def run(self, name: str, command: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        log.info("demo stage %s: %s", name, command)
        started = time.time()
        result = fn(*args, **kwargs)
        self.add(name, command, time.time() - started)
        return result

    def add(self, name: str, command: str, seconds: float) -> None:
        """Add `seconds` to a stage's wall time (summed over resumes) and write demo.json."""
        with self.lock:
            stage = self.record["stages"].setdefault(name, {"command": command, "wall_time_s": 0.0})
            stage["wall_time_s"] = round(stage["wall_time_s"] + seconds, 1)
            stage["command"] = command
            self._write()

    def _write(self) -> None:
        self.record["wall_time_s"] = round(self.earlier_wall_time + time.time() - self.started, 1)
        atomic_write_text(self.path, json.dumps(self.record, indent=2) + "\n")


class _Lanes:
    """Runs `speechrep` commands in child processes, one sequence per lane, the lanes side by side.

    Each child gets an equal share of the cores (OMP_NUM_THREADS) and its output is echoed with the lane's
    name in front. On an interrupt every child is stopped; each command resumes when the demo runs again.
    """

    def __init__(self, stages: _Stages, count: int):
        self.stages = stages
        self.threads = max(1, _available_cores() // count)
        self.children: set[subprocess.Popen] = set()
        self.stopping = False  # set on an interrupt: no lane starts another command

    def command(self, lane: str, name: str, argv: list[str]) -> None:
        """Run `speechrep ARGV` as the stage `name` of `lane`; raises if it fails."""
        command = shlex.join(["speechrep", *argv])
        if self.stopping:
            raise SpeechrepError(f"stage {name!r} not started: the demo was interrupted")
        log.info("demo stage %s [%s, %d thread(s)]: %s", name, lane, self.threads, command)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        started = time.time()
        child = subprocess.Popen([sys.executable, "-m", "speechrep", *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env)
        self.children.add(child)
        try:
            for line in child.stdout:
                sys.stderr.write(f"[{lane}] {line}")
                sys.stderr.flush()
            status = child.wait()
        finally:
            self.children.discard(child)
        if status != 0:
            raise SpeechrepError(f"stage {name!r} failed (exit status {status}; its output is above, marked "
                                 f"[{lane}]): {command}")
        self.stages.add(name, command, time.time() - started)

    def run(self, lanes: dict[str, Callable[[str], None]]) -> None:
        """Run each lane's function (given the lane's name) in its own thread; wait for all of them.

        Ctrl-C or SIGTERM stops every child (SIGTERM is turned into KeyboardInterrupt meanwhile, so that a
        killed demo leaves no orphan training on)."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
        try:
            with ThreadPoolExecutor(len(lanes)) as pool:
                futures = [pool.submit(work, lane) for lane, work in lanes.items()]
                try:
                    wait(futures)
                except BaseException:
                    self.stopping = True
                    for child in list(self.children):
                        child.terminate()
                    raise
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_demo(out: Path, corpus_preset: str | None = None, overrides: Sequence[str] = ()) -> str:
    """Run (or resume) the whole demo into `out`; returns the leaderboard text it printed."""
    from speechrep.bench.leaderboard import write_summary
    from speechrep.bench.report import write_report
    from speechrep.data.synth import make_synthetic_corpus
    from speechrep.downstream.runner import BenchmarkConfig, benchmark

    cfg = load_config(DemoConfig, CONFIG_PATH, overrides)
    if corpus_preset is not None:
        cfg.corpus_preset = corpus_preset
    if not cfg.models:
        raise ConfigError("configs/demo.yaml: `models` is empty; the demo pre-trains at least one model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out, cfg)
    corpus = out / "corpus"
    subsets = sorted({"unlabeled"} | {_TASK_SUBSETS[t] for t in cfg.tasks})
    stages.run("corpus", f"speechrep synth --preset {cfg.corpus_preset} --seed {cfg.seed} --subsets "
               f"{','.join(subsets)} --out {corpus}",
               make_synthetic_corpus, corpus, cfg.corpus_preset, seed=cfg.seed, subsets=subsets)

    # Lane i pre-trains models i, i + n, ... and benchmarks them and their controls; then each lane benchmarks
    # the baselines that no lane has taken yet, so the lane that finishes first takes more of them.
    count = max(1, min(cfg.lanes, len(cfg.models)))
    lanes = _Lanes(stages, count)
    bench_out = out / "bench"
    bench_args = ["--tasks", ",".join(cfg.tasks), "--corpus", str(corpus), "--out", str(bench_out),
                  "--preset", cfg.downstream_preset, *cfg.downstream_overrides]
    waiting_baselines = list(cfg.baselines)
    taking = threading.Lock()

    def bench(lane: str, upstreams: list[str]) -> None:
        names = [u.split("=")[0] for u in upstreams]
        lanes.command(lane, f"benchmark {', '.join(names)}",
                      ["benchmark", *(a for u in upstreams for a in ("--upstream", u)), *bench_args])

    def lane_work(models: list[DemoModel]) -> Callable[[str], None]:
        def work(lane: str) -> None:
            for model in models:
                extra = list(cfg.pretrain_overrides) + list(model.overrides)
                if model.kmeans_features:
                    labels = out / "kmeans" / model.name
                    lanes.command(lane, f"kmeans {model.name}",
                                  ["kmeans", "--features", model.kmeans_features, "--data", str(corpus),
                                   "--k", str(model.kmeans_k), "--out", str(labels), "--seed", str(cfg.seed)])
                    extra.append(f"labels={labels}")
                run_dir = out / "pretrain" / model.name
                lanes.command(lane, f"pretrain {model.name}",
                              ["pretrain", "--method", model.method, "--data", str(corpus), "--out", str(run_dir),
                               "--preset", model.preset, *extra])
                bench(lane, [f"{model.name}={run_dir / 'upstream'}", f"{model.name}@random={run_dir / 'upstream'}"])
            while True:
                with taking:
                    if not waiting_baselines:
                        return
                    baseline = waiting_baselines.pop(0)
                bench(lane, [baseline])
        return work

    lanes.run({" / ".join(m.name for m in cfg.models[i::count]): lane_work(cfg.models[i::count])
               for i in range(count)})

    # Every pair is done: this pass only gathers the rows and scores them against the FBANK baseline.
    upstreams = list(cfg.baselines) + [f"{m.name}{suffix}={out / 'pretrain' / m.name / 'upstream'}"
                                       for m in cfg.models for suffix in ("", "@random")]
    tables: list[str] = []
    bench_cfg = BenchmarkConfig(upstreams=upstreams, tasks=list(cfg.tasks), corpus=corpus, out=bench_out,
                                preset=cfg.downstream_preset, overrides=list(cfg.downstream_overrides))
    stages.run("benchmark", shlex.join(["speechrep", "benchmark",
                                        *(a for u in upstreams for a in ("--upstream", u)), *bench_args]),
               benchmark, bench_cfg, summarise=lambda rows: tables.append(write_summary(rows, bench_out)))
    table = tables[0]
    stages.run("report", f"speechrep report {out}", write_report, out)
    return table

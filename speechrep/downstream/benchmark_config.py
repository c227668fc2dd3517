"""The typed configuration of one `speechrep benchmark` run; saved as OUT/config.yaml.

    cfg = BenchmarkConfig(upstreams=["fbank", "hubert_tiny"], tasks=["ks"], corpus=Path("data/synth"),
                          out=Path("runs/bench"), preset="tiny", overrides=["train.max_steps=30"])
    rows = benchmark(cfg)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError


@dataclass
class BenchmarkConfig:
    """Which upstreams on which tasks, how they are tuned and trained, and where results go."""

    upstreams: list[str]  # hub names, exported directories, LABEL=PATH, NAME@random, fbank_global
    tasks: list[str]  # task names, e.g. ["pr", "ks"]
    corpus: Path  # CORPUS/<subset>/<split>.jsonl.gz, or a Shar directory (`speechrep shard`)
    out: Path  # runs, feature cache, results
    tuning: str = "frozen"  # a speechrep.tuning strategy name (`full` is --finetune)
    lr_sweep: list[float] | None = None  # train each, keep the best on dev
    random_init: bool = False  # every upstream with fresh random weights (the untrained controls)
    feature_cache: bool = True  # cache the hidden states of upstreams the tuning keeps fixed
    features: list[Path] = field(default_factory=list)  # `speechrep extract` stores, matched by weights
    preset: str | None = None  # configs/downstream/<preset>/<task>.yaml layered on each task's file
    overrides: list[str] = field(default_factory=list)  # key=value for every task, TASK.key=value for one
    overwrite: bool = False  # start over in an --out made with other settings (not saved: an action)
    # speechrep.audio.conditions specs, e.g. ["clean", "noise:snr=5"]: each trained head is also tested under
    # each (results.json `test_by_condition`); empty = today's behaviour, and config.yaml omits the key
    test_conditions: list[str] = field(default_factory=list)
    # distorted training: each training cut's audio under one of these specs, drawn per (seed, epoch, cut);
    # training then runs live; dev stays clean. Empty = clean training (cached); config.yaml omits the key
    train_conditions: list[str] = field(default_factory=list)
    # segment boundaries of every cut for upstreams that pool between them (sequence compression); empty: the
    # cuts' phone alignments
    boundaries: str = ""

    def settings(self) -> dict[str, Any]:
        """What decides every row's numbers; an --out made with other settings must not be resumed.

        Upstreams and tasks are not part of it: rows are per (upstream, task), so adding one to an existing
        --out is legitimate (each row records its upstream's weights fingerprint instead).
        """
        settings = {"corpus": str(Path(self.corpus).resolve()), "preset": self.preset, "tuning": self.tuning,
                    "lr_sweep": self.lr_sweep, "overrides": list(self.overrides), "random_init": self.random_init}
        if self.features:  # features read from a store may differ from the run's own cache in the last bits
            settings["features"] = sorted(str(Path(d).resolve()) for d in self.features)
        if self.test_conditions:  # only when given: folders made before the field existed stay valid
            settings["test_conditions"] = list(self.test_conditions)
        if self.train_conditions:  # likewise
            settings["train_conditions"] = list(self.train_conditions)
        if self.boundaries:
            settings["boundaries"] = str(Path(self.boundaries).resolve())
        return settings

    def check(self) -> None:
        """One-line ConfigErrors for settings that cannot run (before any folder is touched)."""
        if not self.upstreams:
            raise ConfigError("--upstream: no upstream given")
        if not self.tasks or any(not t.strip() for t in self.tasks):
            raise ConfigError(f"--tasks {','.join(self.tasks)!r}: give one or more task names, e.g. --tasks ks,pr")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"--tasks {','.join(self.tasks)!r}: a task is named twice")
        if self.lr_sweep is not None and (not self.lr_sweep or
                                          not all(0 < lr < math.inf for lr in self.lr_sweep)):  # NaN fails too
            raise ConfigError(f"--lr-sweep {self.lr_sweep}: expected one or more positive, finite learning rates")
        if self.test_conditions:
            from speechrep.audio.conditions import parse_conditions

            parse_conditions(self.test_conditions)
        if self.train_conditions:
            from speechrep.audio.conditions import distortions_only, parse_conditions

            train_conditions = parse_conditions(self.train_conditions, "train conditions")
            distortions_only(train_conditions, "--train-conditions")
        if self.boundaries and not Path(self.boundaries).is_file():
            raise ConfigError(f"--boundaries {self.boundaries}: no such file")

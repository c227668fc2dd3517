"""Shar stream vs corpus directory on one thread: time to shard, pre-training step time, and what a resume's
skip costs (skip(n) against decoding the same n batches).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shar_stream.py CORPUS --work /tmp/shar_bench [--steps 60]

CORPUS is a corpus directory with an `unlabeled` subset (e.g. `speechrep synth --preset small`). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

import speechrep.pretrain.common as common
from speechrep.data.batching import audio_batches
from speechrep.data.shar import write_shar
from speechrep.pretrain import run_method


def step_seconds(data: Path, run_dir: Path, steps: int) -> float:
    """Median wall seconds per optimizer step (data loading included) of APC tiny on `data`."""
    stamps: list[float] = []
    real_train = common.train

    def timed(*a, **kw):
        def after_step(model, step):
            stamps.append(time.perf_counter())

        return real_train(*a, **{**kw, "after_step": after_step})

    common.train = timed
    try:
        run_method("apc", data, run_dir, "tiny", [f"train.max_steps={steps}", "train.eval_every=100000"])
    finally:
        common.train = real_train
    gaps = [b - a for a, b in zip(stamps[5:], stamps[6:])]  # after warm-up
    return statistics.median(gaps)


def skip_vs_decode(split_or_cuts, count: int) -> tuple[float, float]:
    """Seconds to skip `count` batches of epoch 0, and to decode them."""
    batches = audio_batches(split_or_cuts, 30.0, seed=0)
    start = time.perf_counter()
    batches(0).skip(count)
    skipped = time.perf_counter() - start
    start = time.perf_counter()
    for _, _batch in zip(range(count), batches(0)):
        pass
    return skipped, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shutil.rmtree(args.work, ignore_errors=True)
    start = time.perf_counter()
    write_shar(args.corpus, args.work / "shar", subsets=["unlabeled"], shard_size=100)
    shard_s = time.perf_counter() - start
    from speechrep.data.shar import open_shar
    from speechrep.pretrain.common import PretrainData, load_unlabeled

    split = open_shar(args.work / "shar", "unlabeled", "train")
    data_cfg = PretrainData(max_duration=30.0, max_utterance=10.0)
    train_dir, _ = load_unlabeled(args.corpus, data_cfg)
    train_shar, _ = load_unlabeled(args.work / "shar", data_cfg)
    n = 20
    result = {
        "audio_hours": round(split.seconds / 3600, 3),
        "shard_seconds": round(shard_s, 2),
        "step_seconds_directory": round(step_seconds(args.corpus, args.work / "run_dir", args.steps), 5),
        "step_seconds_shar": round(step_seconds(args.work / "shar", args.work / "run_shar", args.steps), 5),
        f"skip_vs_decode_{n}_batches_directory": [round(t, 3) for t in skip_vs_decode(train_dir, n)],
        f"skip_vs_decode_{n}_batches_shar": [round(t, 3) for t in skip_vs_decode(train_shar, n)],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

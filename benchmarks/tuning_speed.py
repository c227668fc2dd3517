"""Efficient tuning on CPU: training-step time and peak memory of each strategy against full fine-tuning.

Every strategy trains the same upstream (the same weights) with the same head on the same batch: one step is
forward, backward and an AdamW update of what the strategy trains (plus the head and the layer weights). Each
strategy runs in its own process, so its peak resident memory is its own: reported is the peak during the
timed steps minus the resident memory before the first step (the model and its optimizer already built), i.e.
what training adds: activations kept for backward, gradients, optimizer state. Step time: the median of
`--repeats` steps after one warm-up step. Ratios are against `full` in the same run.

    .venv/bin/python benchmarks/tuning_speed.py --upstream hubert_base --batch 2 --seconds 4 --threads 1
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from speechrep.downstream.features import DownstreamModel, FeatureBatch, FeatureEncoder
from speechrep.tuning import get_tuning
from speechrep.upstream import load_upstream

STRATEGIES = ["full", "frozen", "bitfit", "houlsby", "houlsby_parallel", "adapterbias", "lora", "prefix",
              "prompt", "prompt:deep=true"]


class MeanPoolHead(nn.Module):
    """Mean over valid frames → linear: the utterance-classification head of the SUPERB tasks."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(width, classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(features.shape[1])[None] < lengths[:, None]).to(features.dtype)
        return self.linear((features * mask[..., None]).sum(1) / lengths[:, None].to(features.dtype))


def resident_bytes() -> int:
    """The process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(upstream_name: str, strategy: str, batch: int, seconds: float, repeats: int) -> dict:
    """One strategy's step time (median) and added peak memory, in this process."""
    torch.manual_seed(0)
    upstream = load_upstream(upstream_name)
    model = DownstreamModel(FeatureEncoder(upstream, get_tuning(strategy), None),
                            MeanPoolHead(upstream.hidden_sizes[-1], 10))
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    samples = int(seconds * 16000)
    data = FeatureBatch(cuts=None, wavs=0.1 * torch.randn(batch, samples, generator=generator),
                        wav_lens=torch.full((batch,), samples))
    labels = torch.randint(0, 10, (batch,), generator=generator)
    before = resident_bytes()
    times = []
    for step in range(repeats + 1):
        started = time.perf_counter()
        logits, _ = model(data)
        nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step is a warm-up (allocations, optimizer state)
            times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    tuned = sum(p.numel() for p in model.encoder.upstream.parameters() if p.requires_grad)
    return {"strategy": strategy, "step_s": statistics.median(times),
            "added_peak_mb": (peak - before) / 2**20, "tuned_params": tuned}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", default="hubert_base", help="registry name or exported folder")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="length of every utterance in the batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; `full` is the peer")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one strategy's JSON
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure(args.upstream, args.one, args.batch, args.seconds, args.repeats)))
        return
    rows = []
    for strategy in args.strategies.split(","):
        command = [sys.executable, __file__, "--one", strategy, "--upstream", args.upstream, "--batch",
                   str(args.batch), "--seconds", str(args.seconds), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    peer = next(r for r in rows if r["strategy"] == "full")
    print(f"{args.upstream}, batch {args.batch} × {args.seconds:g} s, {args.threads} thread(s), "
          f"median of {args.repeats} steps, torch {torch.__version__}")
    print("| strategy | tuned params | step time | × full | added peak memory | × full |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        time_ratio, memory_ratio = r["step_s"] / peer["step_s"], r["added_peak_mb"] / peer["added_peak_mb"]
        print(f"| {r['strategy']} | {r['tuned_params']:,} | {r['step_s']:.2f} s | {time_ratio:.2f} "
              f"| {r['added_peak_mb']:.0f} MB | {memory_ratio:.2f} |")


if __name__ == "__main__":
    main()

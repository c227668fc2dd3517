"""Seconds per optimizer step of HuBERT Base pre-training (speechrep's objective, `hubert_base`, 95 M
parameters) on this machine's CPU or a GPU (`--device cuda`, optionally `--amp bf16` autocast): a batch of `--utterances` x `--seconds` of seeded noise, random cluster
targets (k = 500, as the second HuBERT iteration), forward in train mode + backward + AdamW step, timed per
step after `--warmup` untimed steps. Used to extrapolate a LibriSpeech 960 h plan (docs/scale.md); a CPU step
time says nothing precise about a GPU's, so the plan quotes published GPU figures beside it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hubert_base_step.py --threads 1 --utterances 4 --seconds 15
    python benchmarks/hubert_base_step.py --device cuda --amp bf16 --utterances 7 --seconds 12.5 --warmup 3 --steps 10
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from speechrep.pretrain.hubert import Config, HuBERTObjective
from speechrep.upstream import load_upstream


class RandomTargets:
    """Stands in for k-means labels: seeded random cluster ids per frame."""

    def __init__(self, k: int):
        self.k = k

    def targets(self, cuts, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        return torch.randint(self.k, (len(lengths), frames), generator=torch.Generator().manual_seed(0)).to(
            lengths.device)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--utterances", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast of the forward pass")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = Config()
    upstream = load_upstream("hubert_base")
    objective = HuBERTObjective(upstream, RandomTargets(500), cfg).train().to(device)
    params = sum(p.numel() for p in objective.parameters())
    optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, betas=(0.9, 0.98), weight_decay=0.01)
    samples = int(args.seconds * 16000)
    batch = SimpleNamespace(wavs=(torch.randn(args.utterances, samples) * 0.1).to(device),
                            wav_lens=torch.full((args.utterances,), samples, device=device), cuts=None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss, _ = objective(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        seconds = time.perf_counter() - start
        print(f"step {step}: {seconds:.1f} s, loss {float(loss.detach()):.3f}", flush=True)
    peak = {"peak_cuda_gib": torch.cuda.max_memory_allocated(device) / 2**30} if device.type == "cuda" else {}
    print(json.dumps({"params_m": params / 1e6, "threads": args.threads, "device": str(device),
                      "amp": args.amp, "batch_seconds": args.utterances * args.seconds, "step_seconds": times,
                      "peak_rss_gib": _kib("VmHWM") / 2**20, **peak}))


if __name__ == "__main__":
    main()

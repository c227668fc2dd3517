"""Peak memory per rank of `speechrep pretrain` under torchrun: FSDP2 (`train.parallel=fsdp`) against DDP.

Each run is `torchrun --standalone --nproc_per_node 2` over this file in worker mode, which calls the
`speechrep pretrain` command in-process and records, per rank: the RSS after imports (baseline), the peak RSS
up to the last training step (VmHWM read when the loop logs that step, before the final evaluation and
checkpoint) and the peak RSS of the whole run (the final full-state gather and checkpoint included). CPU and
gloo only; the model is a wav2vec 2.0 of width 512 with the tiny preset's other settings.

glibc's malloc raises its mmap threshold each time a large block is freed, after which freed blocks stay in
the heap and count in RSS: FSDP2 frees and re-allocates each layer's gathered weights and gradients every
step, so with the default the RSS peak measures allocator retention more than live tensors (FSDP2 read
1.1x DDP that way on this model). The runs therefore fix MALLOC_MMAP_THRESHOLD_=65536 (both alike).

    .venv/bin/python benchmarks/train_fsdp_memory.py --corpus CORPUS --out /tmp/fsdp_mem [--layers 6]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def worker(out: Path, argv: list[str]) -> None:
    import speechrep.train.loop as loop
    from speechrep.cli import main

    baseline = _kib("VmRSS")
    seen = {"train_peak": 0}
    mean = loop._mean_over_ranks

    def recording(values, device):  # called on every rank when the loop logs a step (log_every=1)
        seen["train_peak"] = _kib("VmHWM")
        return mean(values, device)

    loop._mean_over_ranks = recording
    code = main(argv)
    rank = os.environ["RANK"]
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"baseline_mib": baseline / 1024, "train_peak_mib": seen["train_peak"] / 1024,
         "run_peak_mib": _kib("VmHWM") / 1024, "exit": code}))


def run(parallel: str, args: argparse.Namespace) -> list[dict[str, float]]:
    out = args.out / parallel
    out.mkdir(parents=True, exist_ok=True)
    pretrain = ["pretrain", "--method", "wav2vec2", "--preset", "tiny", f"model.hidden_size={args.width}",
                f"model.num_heads={args.width // 64}", f"model.ffn_size={4 * args.width}",
                f"model.num_layers={args.layers}", "data.max_utterance=3.0",
                f"data.max_duration={args.seconds}",
                f"train.max_steps={args.steps}", f"train.eval_every={args.steps}", "train.log_every=1",
                f"train.parallel={parallel}", "data.max_dev_batches=1",
                "--data", str(args.corpus), "--out", str(out / "run"), "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    __file__, "--worker", str(out), "--", *pretrain], env=env, check=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path)
    p.add_argument("--out", type=Path, default=Path("/tmp/fsdp_memory"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seconds", type=float, default=6.0, help="seconds of audio per batch and rank")
    p.add_argument("--steps", type=int, default=3)
    args, rest = p.parse_known_args()
    if args.worker:
        worker(args.worker, [a for a in rest if a != "--"])
        return
    results = {parallel: run(parallel, args) for parallel in ("ddp", "fsdp")}
    print(json.dumps(results, indent=1))
    for key in ("train_peak_mib", "run_peak_mib"):
        for r in range(2):
            ddp, fsdp = results["ddp"][r], results["fsdp"][r]
            above = [x[key] - x["baseline_mib"] for x in (ddp, fsdp)]
            print(f"rank {r} {key}: ddp {ddp[key]:.0f} MiB, fsdp {fsdp[key]:.0f} MiB "
                  f"(ratio {fsdp[key] / ddp[key]:.2f}); above baseline: ddp {above[0]:.0f}, "
                  f"fsdp {above[1]:.0f} (ratio {above[1] / above[0]:.2f})")


if __name__ == "__main__":
    main()

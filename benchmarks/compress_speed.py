"""Structured compression on CPU: inference wall time and peak memory of one-shot pruned models against the
unpruned upstream, beside their MACs.

The models are those `speechrep compress` builds without training: attention heads (`heads`, ranked globally)
and FFN units (`ffn`, per layer) kept at each `--keeps` fraction (`compress.structured`), and skip-ahead
(`skip`: the attention of the most diagonal layers replaced by the identity) where `compress.skip` exists.
Skip-ahead measures diagonality on the timed input itself (seeded noise): which layers it skips is then
arbitrary, but their number, which is what its speed depends on, is not. Every model sees the same input
(`--batch` utterances of `--seconds` s of seeded noise) and runs in its own process, built from the same
upstream (a registry name without weights is seeded from its name, so every process gets the same model).

Wall time: the median of `--repeats` forward passes after one warm-up, under inference_mode with the default
(fast) attention kernel (`compress.profile.time_forward`). Peak memory: what one more forward pass adds to the
process's resident memory, i.e. its peak resident set size (VmHWM, reset through /proc/self/clear_refs just
before the pass) minus the resident memory with the model built: activations, attention matrices and kernel
workspaces, not the weights (4 bytes a parameter). For that pass glibc's malloc is told (mallopt) to return
every freed block above 64 KiB to the system at once; otherwise the blocks freed by earlier passes stay
resident and are reused, and the difference reads about 0. Python-level tracers (tracemalloc) miss torch's
C++ allocations, hence the resident-memory reading. MACs: `compress.profile.count_macs` on the same input,
per second of audio. Ratios are against the unpruned model in the same run; on a shared machine, wall times
of a few percent apart are within noise.

    .venv/bin/python benchmarks/compress_speed.py --upstream melhubert_base --seconds 10 --threads 1
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import re
import subprocess
import sys

import torch

from speechrep.compress.profile import count_macs, count_parameters, time_forward
from speechrep.compress.structured import prune_ffn, prune_heads
from speechrep.upstream import load_upstream

HAS_SKIP = importlib.util.find_spec("speechrep.compress.skip") is not None


def _status_kib(key: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


def _release_freed_memory() -> bool:
    """Make glibc return freed blocks above 64 KiB to the system from now on, and trim what it holds; False
    where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD of <malloc.h>
        ok = libc.mallopt(mmap_threshold, 64 * 1024) and libc.mallopt(trim_threshold, 0)
    except (OSError, AttributeError):
        return False
    gc.collect()
    libc.malloc_trim(0)
    return bool(ok)


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build(upstream: str, method: str, keep: float, wavs: torch.Tensor,
          wav_lens: torch.Tensor) -> torch.nn.Module:
    """The unpruned upstream (`original`) or its one-shot `method` step at `keep`."""
    torch.manual_seed(0)
    model = load_upstream(upstream).eval()
    if method == "original":
        return model
    if method == "heads":
        return prune_heads(model, keep).eval()
    if method == "ffn":
        return prune_ffn(model, keep).eval()
    from speechrep.compress.skip import attention_diagonality, skip_attention

    return skip_attention(model, keep, attention_diagonality(model, [(wavs, wav_lens)], band=1)).eval()


def measure(upstream: str, method: str, keep: float, batch: int, seconds: float, repeats: int) -> dict:
    """One model's MACs, wall time and added peak memory, in this process."""
    samples = int(round(seconds * 16000))
    wavs = 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(1))
    wav_lens = torch.full((batch,), samples)
    model = build(upstream, method, keep, wavs, wav_lens)
    params = sum(count_parameters(model).values())
    by_kind, _, frames = count_macs(model, wavs, wav_lens)
    wall = time_forward(model, wavs, wav_lens, repeats)
    exact = _release_freed_memory()
    before = _status_kib("VmRSS")
    exact = _reset_peak() and exact
    with torch.inference_mode():
        model(wavs, wav_lens)
    added = _status_kib("VmHWM") - before
    return {"method": method, "keep": keep, "params": params, "frames": frames,
            "gmacs_per_second": sum(by_kind.values()) / 1e9 / seconds / batch, "wall_s": wall,
            "added_peak_mib": added / 1024, "peak_exact": exact}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", default="melhubert_base", help="registry name or exported folder")
    p.add_argument("--seconds", type=float, default=10.0, help="length of every utterance")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keeps", default="0.75,0.5,0.25", help="comma-separated fractions kept")
    p.add_argument("--methods", default="heads,ffn,skip",
                   help="comma-separated; skip only where compress.skip exists")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: METHOD:KEEP, one model's JSON
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        method, keep = args.one.split(":")
        print(json.dumps(measure(args.upstream, method, float(keep), args.batch, args.seconds, args.repeats)))
        return
    methods = [m for m in args.methods.split(",") if m != "skip" or HAS_SKIP]
    models = [("original", 1.0)] + [(m, float(k)) for m in methods for k in args.keeps.split(",")]
    rows = []
    for method, keep in models:
        command = [sys.executable, __file__, "--one", f"{method}:{keep}", "--upstream", args.upstream,
                   "--seconds", str(args.seconds), "--batch", str(args.batch), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    peer = rows[0]
    print(f"{args.upstream}, batch {args.batch} × {args.seconds:g} s of noise, {args.threads} thread(s), "
          f"median of {args.repeats} passes, torch {torch.__version__}"
          + ("" if HAS_SKIP or "skip" not in args.methods else " (no compress.skip: skip-ahead left out)"))
    print("| model | params | GMACs / audio s | × | wall time | × | added peak memory | × |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "unpruned" if r["method"] == "original" else f"{r['method']} {r['keep']:g}"
        peak = f"{r['added_peak_mib']:.0f} MiB" + ("" if r["peak_exact"] else " (approximate)")
        ratios = [r[k] / peer[k] if peer[k] else float("nan") for k in ("gmacs_per_second", "wall_s",
                                                                          "added_peak_mib")]
        print(f"| {name} | {r['params'] / 1e6:.1f} M | {r['gmacs_per_second']:.2f} | {ratios[0]:.2f} "
              f"| {r['wall_s'] * 1e3:.0f} ms | {ratios[1]:.2f} | {peak} | {ratios[2]:.2f} |")


if __name__ == "__main__":
    main()

"""Pre-training step speed and memory: speechrep's wav2vec 2.0 objective against Hugging Face transformers'
`Wav2Vec2ForPreTraining`, Base size, same weights, same batch, same masks and distractors.

A seeded random HF Base model (layer drop off, so both run every layer) is built in each worker process; ours
gets its weights through `convert_hf_state_dict` plus the quantizer, `project_q` and `project_hid`
(our `final_proj`). The batch is seeded noise; the span mask (p = 0.065, span 10) and K = 100 distractors per
masked frame (HF's `_sample_negative_indices`, mapped to our masked-frame indexing) are the same for both. One
training step = forward (train mode) + backward + AdamW step + zero_grad. Each implementation runs in its own
fresh process with the same thread count: `--warmup` steps, then the best and median of `--steps` timed
steps; peak memory is the peak RSS of the timed steps above the RSS before them, i.e. after warm-up, with
weights, gradients' storage and optimizer state already in place (CPU; Linux clear_refs), or
`max_memory_allocated` above the allocation before them (CUDA).

    .venv/bin/python benchmarks/pretrain_speed.py --threads 2 --batch 2 --seconds 4 --warmup 1 --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _rss_kib(field: str) -> int:
    """VmRSS / VmHWM of this process in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _build(impl: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The HF Base pre-training model, or ours carrying its weights; returns (model, HF config)."""
    import transformers

    torch.manual_seed(0)
    hfc = transformers.Wav2Vec2Config(layerdrop=0.0, feat_quantizer_dropout=0.0, num_negatives=100)
    hf = transformers.Wav2Vec2ForPreTraining(hfc)
    if impl == "hf":
        return hf.to(device).train(), hfc
    from speechrep.pretrain.wav2vec2 import Config, Wav2Vec2Objective
    from speechrep.upstream.wav2vec2 import Wav2Vec2, Wav2Vec2Config, config_from_hf, convert_hf_state_dict

    upstream = Wav2Vec2(config_from_hf(hfc.to_dict(), Wav2Vec2Config(), do_normalize=False))
    upstream.load_state_dict(convert_hf_state_dict(hf.state_dict()))
    cfg = Config(feature_grad_mult=1.0, quantizer_dropout=0.0)  # HF has neither
    ours = Wav2Vec2Objective(upstream, cfg)
    groups, entries = hfc.num_codevector_groups, hfc.num_codevectors_per_group
    with torch.no_grad():
        ours.quantizer.codebook.copy_(hf.quantizer.codevectors.view(groups, entries, -1))
        ours.quantizer.weight_proj.load_state_dict(hf.quantizer.weight_proj.state_dict())
        ours.project_q.load_state_dict(hf.project_q.state_dict())
        ours.final_proj.load_state_dict(hf.project_hid.state_dict())
    del hf
    return ours.to(device).train(), hfc


def _inputs(batch: int, seconds: float, frames: int, num_negatives: int) -> tuple[torch.Tensor, ...]:
    """Seeded waveforms, span mask and HF-style distractor indices (shared by both implementations)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

    from speechrep.nn.masking import compute_span_mask

    generator = torch.Generator().manual_seed(1)
    wavs = 0.1 * torch.randn(batch, int(16000 * seconds), generator=generator)
    mask = compute_span_mask(torch.full((batch,), frames), frames, 0.65, 10, min_spans=2, generator=generator)
    np.random.seed(1)
    negatives = torch.from_numpy(
        _sample_negative_indices((batch, frames), num_negatives, mask.numpy())
    ).long()
    return wavs, mask, negatives


def worker(impl: str, args: argparse.Namespace) -> dict[str, float]:
    """Time `args.steps` training steps of one implementation in this process."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, hfc = _build(impl, device)
    samples = int(16000 * args.seconds)
    frames = (
        int(model._get_feat_extract_output_lengths(samples))
        if impl == "hf"
        else int(model.upstream.feature_encoder.output_lengths(torch.tensor([samples])))
    )
    wavs, mask, negatives = _inputs(args.batch, args.seconds, frames, hfc.num_negatives)
    wavs, mask, negatives = wavs.to(device), mask.to(device), negatives.to(device)
    lens = torch.full((args.batch,), samples, device=device)
    position = torch.full((mask.numel(),), -1, dtype=torch.long, device=device)
    position[mask.flatten()] = torch.arange(int(mask.sum()), device=device)
    distractors = position[negatives[mask]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        if impl == "hf":
            loss = model(wavs, mask_time_indices=mask, sampled_negative_indices=negatives).loss
        else:
            loss = model.compute(wavs, lens, mask, distractors).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):  # also allocates the optimizer state, outside the measured peak
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
        before = _rss_kib("VmRSS") * 1024
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_kib("VmHWM") * 1024) - before
    return {
        "best_s": min(times),
        "median_s": statistics.median(times),
        "peak_mib": peak / 2**20,
        "masked_frames": int(mask.sum()),
        "frames": frames,
    }


def main() -> None:
    """Run both implementations in fresh processes and print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--_worker", choices=["ours", "hf"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        print(json.dumps(worker(args._worker, args)))
        return
    results = {}
    for impl in ("ours", "hf"):
        argv = [sys.executable, __file__, "--_worker", impl] + [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("_worker", "json") and v is not None
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, hf = results["ours"], results["hf"]
    print(
        f"wav2vec 2.0 Base training step, batch {args.batch} x {args.seconds:g} s, {ours['frames']} frames "
        f"({ours['masked_frames']} masked), K=100, device {args.device}, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    print(f"{'':<12}{'best s':>10}{'median s':>10}{'peak MiB':>10}")
    for name, r in (("speechrep", ours), ("transformers", hf)):
        print(f"{name:<12}{r['best_s']:>10.3f}{r['median_s']:>10.3f}{r['peak_mib']:>10.0f}")
    print(
        f"{'ours / HF':<12}{ours['best_s'] / hf['best_s']:>10.2f}{ours['median_s'] / hf['median_s']:>10.2f}"
        f"{ours['peak_mib'] / max(hf['peak_mib'], 1e-9):>10.2f}"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()

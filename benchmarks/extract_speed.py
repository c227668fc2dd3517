"""Extraction speed and memory: speechrep upstreams against Hugging Face transformers on identical weights.

For HuBERT Base and WavLM Base+ configurations (random weights, seeded), the HF model is saved with
`save_pretrained` and loaded into speechrep with `load_upstream(dir)`, so both run the same weights. Both
return every hidden state for the same batch (equal lengths, no padding) with the same thread count:
fp32, then bf16 autocast (CPU, and CUDA when available). Reported: the best wall time over repeats (the two
implementations alternate, so both see the same machine load), the ratio ours/HF, the peak extra memory of
one forward pass (CPU: peak RSS above the RSS before the pass, in a fresh process per implementation;
CUDA: max_memory_allocated) and its ratio. A last run measures the peak RSS of a
20-minute file through speechrep's chunked extraction (Base-size HuBERT). `--store-seconds` measures
`extract_features` into a feature store for each `--store-shard-mb`: wall time, shards written, the work a
kill loses at most (the time to fill one shard) and the peak RSS above the loaded model (bounded by a shard
plus one batch); `--store-only` runs just that.

    .venv/bin/python benchmarks/extract_speed.py --threads 2 --batch 2 --seconds 8 --repeats 3
    .venv/bin/python benchmarks/extract_speed.py --store-only --store-seconds 60 --store-shard-mb 8,64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

MODELS = {"hubert_base": "HubertConfig", "wavlm_base_plus": "WavLMConfig"}
MODEL_CLASSES = {"HubertConfig": "HubertModel", "WavLMConfig": "WavLMModel"}


def _rss_kib(field: str) -> int:
    """VmRSS / VmHWM of this process in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Make VmHWM restart from the current RSS (Linux clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def save_hf_model(name: str, directory: Path, seed: int = 0) -> Path:
    """A randomly initialised HF model of the named configuration, saved with save_pretrained."""
    import transformers

    config_name = MODELS[name]
    config = getattr(transformers, config_name)()
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASSES[config_name])(config).eval()
    path = directory / name
    model.save_pretrained(path)
    return path


def build(impl: str, name: str, model_dir: Path, device: str) -> torch.nn.Module:
    """The HF model or ours (same weights, loaded from the saved HF directory)."""
    if impl == "hf":
        import transformers

        config_name = MODELS[name]
        model = getattr(transformers, MODEL_CLASSES[config_name]).from_pretrained(model_dir)
    else:
        from speechrep import load_upstream

        model = load_upstream(model_dir)
    return model.eval().to(device)


def forward(impl: str, model: torch.nn.Module, wavs: torch.Tensor) -> list[torch.Tensor]:
    """Every hidden state of the batch."""
    if impl == "hf":
        return list(model(wavs, output_hidden_states=True).hidden_states)
    lengths = torch.full((wavs.shape[0],), wavs.shape[1], device=wavs.device)
    return model(wavs, lengths).hidden_states


def _autocast(precision: str, device: str):
    if precision == "bf16":
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return nullcontext()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(impl: str, name: str, model_dir: Path, precision: str, device: str, threads: int, batch: int,
                seconds: float) -> float:
    """MiB of extra memory at the peak of one forward pass (run in a fresh process: RSS peaks are global)."""
    torch.set_num_threads(threads)
    model = build(impl, name, model_dir, device)
    wavs = _batch(batch, seconds).to(device)
    with torch.inference_mode(), _autocast(precision, device):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            forward(impl, model, wavs)
            _sync(device)
            return (torch.cuda.max_memory_allocated() - before) / 2**20
        _reset_peak_rss()
        before = _rss_kib("VmRSS")
        forward(impl, model, wavs)
        return (_rss_kib("VmHWM") - before) / 1024


def wall_times(name: str, model_dir: Path, precision: str, device: str, threads: int, batch: int,
               seconds: float, repeats: int) -> dict[str, float]:
    """Best wall time of each implementation; runs alternate so both see the same machine load."""
    torch.set_num_threads(threads)
    models = {impl: build(impl, name, model_dir, device) for impl in ("ours", "hf")}
    wavs = _batch(batch, seconds).to(device)
    times: dict[str, list[float]] = {impl: [] for impl in models}
    with torch.inference_mode(), _autocast(precision, device):
        for impl, model in models.items():  # warm-up
            forward(impl, model, wavs)
        for _ in range(repeats):
            for impl, model in models.items():
                _sync(device)
                start = time.perf_counter()
                forward(impl, model, wavs)
                _sync(device)
                times[impl].append(time.perf_counter() - start)
    return {impl: min(values) for impl, values in times.items()}


def _batch(batch: int, seconds: float) -> torch.Tensor:
    """The same seeded batch of noise for every run."""
    return 0.1 * torch.randn(batch, int(16000 * seconds), generator=torch.Generator().manual_seed(0))


def parity(name: str, model_dir: Path, seconds: float) -> float:
    """Largest absolute difference over all hidden states between HF and ours (fp32, one utterance)."""
    wavs = 0.1 * torch.randn(1, int(16000 * seconds), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = forward("ours", build("ours", name, model_dir, "cpu"), wavs)
        theirs = forward("hf", build("hf", name, model_dir, "cpu"), wavs)
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


def long_file_rss(minutes: float, threads: int, chunk_seconds: float, overlap_seconds: float,
                  layers: str) -> dict:
    """Peak RSS (whole process) of chunked extraction of one long file through a Base-size HuBERT."""
    from speechrep import load_upstream
    from speechrep.upstream.chunking import chunked_forward

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_upstream("hubert_base").eval()
    wav = 0.1 * torch.randn(int(16000 * 60 * minutes), generator=torch.Generator().manual_seed(0))
    chosen = None if layers == "all" else [int(k) for k in layers.split(",")]
    rss_before = _rss_kib("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        output = chunked_forward(model, wav, chunk_seconds, overlap_seconds, chosen)
    elapsed = time.perf_counter() - start
    feature_mib = sum(h.numel() * h.element_size() for h in output.hidden_states) / 2**20
    return {"minutes": minutes, "layers": layers, "frames": int(output.lengths[0]), "seconds": elapsed,
            "rss_before_mib": rss_before / 1024, "peak_rss_mib": _rss_kib("VmHWM") / 1024,
            "features_mib": feature_mib}


def chunking_error(seconds: float, threads: int, chunk_seconds: float, overlap_seconds: float) -> dict:
    """Per-layer difference between chunked and full-pass features of one medium-length file (hubert_base
    with its group-norm CNN, and the same weights with the utterance-wide statistics out of the way)."""
    from speechrep import load_upstream
    from speechrep.upstream.chunking import chunked_forward

    torch.set_num_threads(threads)
    wav = 0.1 * torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(2))
    report = {}
    for label, overrides in (("hubert_base", {}), ("hubert_base, layer-norm CNN", {"conv_norm": "layer"})):
        torch.manual_seed(0)
        model = load_upstream("hubert_base", **overrides).eval()
        with torch.inference_mode():
            full = model(wav[None], torch.tensor([wav.shape[0]])).hidden_states
            chunked = chunked_forward(model, wav, chunk_seconds, overlap_seconds).hidden_states
        report[label] = {
            "relative_l2": [float((a - b).norm() / a.norm()) for a, b in zip(full, chunked)],
            "min_cosine": [float(torch.cosine_similarity(a[0], b[0], dim=-1).min())
                           for a, b in zip(full, chunked)],
        }
    return report


def store_fill(seconds: float, shard_mb: float, threads: int, layers: str, device: str) -> dict:
    """Extract `seconds` of audio (10-s files, hubert_base) into a fresh store with `shard_mb` shards."""
    from speechrep import load_upstream
    from speechrep.audio.io import save_audio
    from speechrep.upstream.extract import extract_features, read_index

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_upstream("hubert_base").eval().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        generator = torch.Generator().manual_seed(0)
        for i in range(max(1, round(seconds / 10))):
            save_audio(Path(tmp) / "audio" / f"u{i:04d}.wav", 0.1 * torch.randn(160000, generator=generator),
                       16000)
        _reset_peak_rss()
        rss_before = _rss_kib("VmRSS")
        start = time.perf_counter()
        summary = extract_features(model, [Path(tmp) / "audio"], Path(tmp) / "store", layers,
                                   max_shard_mb=shard_mb, max_batch_seconds=20.0, progress=False)
        elapsed = time.perf_counter() - start
        shards = len({entry["shard"] for entry in read_index(Path(tmp) / "store").values()})
        stored_mib = sum(p.stat().st_size for p in (Path(tmp) / "store").glob("shard-*.safetensors")) / 2**20
    return {"seconds_audio": 10.0 * summary.written, "shard_mb": shard_mb, "layers": layers, "device": device,
            "wall_s": elapsed, "shards": shards, "stored_mib": stored_mib,
            "work_per_shard_s": elapsed * min(1.0, shard_mb / max(stored_mib, 1e-9)),
            "peak_rss_above_model_mib": (_rss_kib("VmHWM") - rss_before) / 1024}


def _in_subprocess(args: list[str]) -> Any:
    """Run one measurement in a fresh interpreter so peak RSS is its own."""
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each utterance of the batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="0 skips the long-file run")
    parser.add_argument("--long-layers", default="all", help="'all' or indices kept for the long file")
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--overlap-seconds", type=float, default=5.0)
    parser.add_argument("--medium-seconds", type=float, default=0.0,
                        help="> 0: also compare chunked and full-pass features on a file this long")
    parser.add_argument("--store-seconds", type=float, default=0.0,
                        help="> 0: also time extract_features into a feature store on this much audio")
    parser.add_argument("--store-shard-mb", default="8,64", help="shard sizes (MB) for --store-seconds")
    parser.add_argument("--store-layers", default="all", help="layers kept in the store run")
    parser.add_argument("--store-only", action="store_true", help="run only the --store-seconds measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--_memory", nargs=3, metavar=("IMPL", "NAME", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--_time", nargs=2, metavar=("NAME", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--_precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--_device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--_long", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_store", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._memory:
        impl, name, directory = args._memory
        print(json.dumps(peak_memory(impl, name, Path(directory), args._precision, args._device, args.threads,
                                     args.batch, args.seconds)))
        return
    if args._time:
        name, directory = args._time
        print(json.dumps(wall_times(name, Path(directory), args._precision, args._device, args.threads,
                                    args.batch, args.seconds, args.repeats)))
        return
    if args._long:
        print(json.dumps(long_file_rss(args.long_minutes, args.threads, args.chunk_seconds,
                                       args.overlap_seconds, args.long_layers)))
        return
    if args._store is not None:
        print(json.dumps(store_fill(args.store_seconds, args._store, args.threads, args.store_layers,
                                    args._device)))
        return
    if args.store_only:
        results = {"store": _store_runs(args)}
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return

    import transformers

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    common = ["--threads", str(args.threads), "--batch", str(args.batch), "--seconds", str(args.seconds),
              "--repeats", str(args.repeats)]
    results: dict = {"torch": torch.__version__, "transformers": transformers.__version__,
                     "threads": args.threads, "batch": args.batch, "seconds": args.seconds, "runs": []}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"batch {args.batch} x {args.seconds:g} s, best of {args.repeats} (alternating)")
    print(f"{'model':<16}{'device':<7}{'prec':<6}{'ours s':>9}{'HF s':>9}{'time ratio':>12}"
          f"{'ours MiB':>10}{'HF MiB':>9}{'mem ratio':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model_dir = save_hf_model(name, Path(tmp))
            results.setdefault("parity_max_abs_diff", {})[name] = parity(name, model_dir, 2.0)
            for device in devices:
                for precision in args.precisions.split(","):
                    chosen = ["--_precision", precision, "--_device", device]
                    times = _in_subprocess([*common, "--_time", name, str(model_dir), *chosen])
                    row = {}
                    for impl in ("ours", "hf"):
                        memory = _in_subprocess([*common, "--_memory", impl, name, str(model_dir), *chosen])
                        row[impl] = {"seconds": times[impl], "peak_mib": memory}
                    time_ratio = row["ours"]["seconds"] / row["hf"]["seconds"]
                    mem_ratio = row["ours"]["peak_mib"] / max(row["hf"]["peak_mib"], 1e-9)
                    results["runs"].append(dict(model=name, device=device, precision=precision, **row,
                                                time_ratio=time_ratio, memory_ratio=mem_ratio))
                    print(f"{name:<16}{device:<7}{precision:<6}{row['ours']['seconds']:>9.3f}"
                          f"{row['hf']['seconds']:>9.3f}{time_ratio:>12.2f}{row['ours']['peak_mib']:>10.0f}"
                          f"{row['hf']['peak_mib']:>9.0f}{mem_ratio:>11.2f}", flush=True)
    print("parity (max |ours - HF| over all hidden states, fp32):",
          ", ".join(f"{k} {v:.1e}" for k, v in results["parity_max_abs_diff"].items()))
    if args.long_minutes > 0:
        long = _in_subprocess(["--threads", str(args.threads), "--_long", "--long-minutes",
                               str(args.long_minutes), "--long-layers", args.long_layers, "--chunk-seconds",
                               str(args.chunk_seconds), "--overlap-seconds", str(args.overlap_seconds)])
        results["long_file"] = long
        print(f"{long['minutes']:g}-minute file, hubert_base, chunks {args.chunk_seconds:g} s / overlap "
              f"{args.overlap_seconds:g} s, layers {long['layers']}: {long['frames']} frames in "
              f"{long['seconds']:.0f} s; peak RSS {long['peak_rss_mib']:.0f} MiB (model + audio "
              f"{long['rss_before_mib']:.0f} MiB before, features {long['features_mib']:.0f} MiB)")
    if args.medium_seconds > 0:
        error = chunking_error(args.medium_seconds, args.threads, args.chunk_seconds, args.overlap_seconds)
        results["chunking_error"] = error
        print(f"chunked ({args.chunk_seconds:g} s windows, {args.overlap_seconds:g} s overlap) vs full pass, "
              f"{args.medium_seconds:g} s file, per hidden state 0..12:")
        for label, values in error.items():
            print(f"  {label}: relative L2 " + " ".join(f"{v:.3f}" for v in values["relative_l2"]))
            print(f"  {label}: min cosine  " + " ".join(f"{v:.3f}" for v in values["min_cosine"]))
    if args.store_seconds > 0:
        results["store"] = _store_runs(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _store_runs(args: argparse.Namespace) -> list[dict]:
    """The --store-seconds measurement for each shard size (a fresh process each), printed as a table."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"extract_features into a store: hubert_base, {args.store_seconds:g} s of audio (10-s files), "
          f"layers {args.store_layers}, {device}, {args.threads} threads")
    print(f"{'shard MB':>9}{'wall s':>9}{'shards':>8}{'stored MiB':>12}{'s per shard':>13}{'peak RSS MiB':>14}")
    runs = []
    for shard_mb in (float(v) for v in args.store_shard_mb.split(",")):
        run = _in_subprocess(["--threads", str(args.threads), "--store-seconds", str(args.store_seconds),
                              "--store-layers", args.store_layers, "--_device", device, "--_store", str(shard_mb)])
        runs.append(run)
        print(f"{shard_mb:>9g}{run['wall_s']:>9.1f}{run['shards']:>8}{run['stored_mib']:>12.0f}"
              f"{run['work_per_shard_s']:>13.1f}{run['peak_rss_above_model_mib']:>14.0f}", flush=True)
    return runs


if __name__ == "__main__":
    main()

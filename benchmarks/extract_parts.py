"""Extraction throughput of one process against torchrun ranks (one thread each), and identical outputs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/extract_parts.py --upstream UPSTREAM --audio DIR \
        --files 240 --procs 1,2 --out /tmp/extract_parts

Takes the first `--files` audio files of DIR (sorted), links them into OUT/audio, and runs
`speechrep extract` on them once per process count (`torchrun --nproc_per_node P` for P > 1) into
OUT/feats-P. Prints a markdown table (wall seconds of the whole command, including start-up and the merge;
audio seconds per wall second; speed-up over one process) and whether every store reads the same tensors.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from speechrep.audio.io import audio_info
from speechrep.upstream.extract import audio_files, read_index
from speechrep.upstream.feature_store import FeatureStore


def main() -> None:
    """Run the measurement and print its table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--out", type=Path, default=Path("/tmp/extract_parts"))
    args = parser.parse_args()

    files = audio_files(args.audio)[0][: args.files]
    audio = args.out / "audio"
    shutil.rmtree(args.out, ignore_errors=True)
    audio.mkdir(parents=True)
    for path in files:
        (audio / path.name).symlink_to(path.resolve())
    seconds = sum(audio_info(path).duration for path in files)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    load_before = os.getloadavg()
    rows, stores = [], {}
    for procs in [int(p) for p in args.procs.split(",")]:
        out = args.out / f"feats-{procs}"
        launch = ([sys.executable, "-m", "speechrep"] if procs == 1 else
                  [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_port", "0", "-m", "speechrep"])
        command = launch + ["extract", "--upstream", args.upstream, "--layers", args.layers,
                            "--out", str(out), str(audio)]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        rows.append((procs, wall))
        stores[procs] = out
    print(f"{len(files)} files, {seconds:.1f} s of audio, upstream {args.upstream}, layers {args.layers}, "
          f"{os.cpu_count()} CPUs, load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    print("| processes | wall s | audio s / wall s | speed-up |\n|---|---|---|---|")
    for procs, wall in rows:
        print(f"| {procs} | {wall:.1f} | {seconds / wall:.1f} | {rows[0][1] / wall:.2f} |")
    reference = FeatureStore(stores[rows[0][0]])
    index = read_index(reference.folder)
    for procs, folder in stores.items():
        other = FeatureStore(folder)
        same = sorted(read_index(folder)) == sorted(index) and all(
            torch.equal(reference.tensor(key, layer), other.tensor(key, layer))
            for key in index for layer in reference.settings["layers"])
        print(f"{procs} process(es): {len(read_index(folder))} utterances, identical to 1 process: {same}")


if __name__ == "__main__":
    main()

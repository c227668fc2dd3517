"""Sequence compression on CPU: MACs per audio second and inference wall time of MelHuBERT against its output
frame rate, as ratios against the uncompressed (50 Hz) model in the same run.

Each variant is the same architecture (`--upstream` with `--model` overrides, weights seeded) with
`downsample` k = 1…5 (50, 25, 16.7, 12.5, 10 Hz) and a segmentation: `fixed` (averaged groups of k frames),
`conv` (a strided convolution), `units` (runs of codebook units; the codebook is random here, which changes
where segments lie but not how many there are: always ceil(T / k)) and `alignment` (boundaries every 100 ms,
fitted to the same count). One utterance of `--seconds` s of seeded noise; MACs by
`compress.profile.count_macs` (the front end, pooling, Transformer), wall time the median of `--repeats`
passes after a warm-up (`compress.profile.time_forward`).

    .venv/bin/python benchmarks/sequence_compression_speed.py --seconds 10 --threads 1
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from speechrep.compress.profile import count_macs, time_forward
from speechrep.upstream import load_upstream

DEMO = {"num_mel_bins": 80, "hidden_size": 256, "num_layers": 4, "num_heads": 4, "ffn_size": 1024,
        "layer_norm_first": True}
SEGMENTATIONS = {"fixed": {}, "conv": {"pooling": "conv"}, "units": {"segmentation": "units",
                                                                   "segment_units": 100},
                 "alignment": {"segmentation": "alignment"}}


class WithBoundaries(nn.Module):
    """An alignment-pooled upstream called as (wavs, wav_lens): boundaries every `every` seconds."""

    def __init__(self, upstream: nn.Module, every: float = 0.1):
        super().__init__()
        self.upstream, self.every = upstream, every

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor):  # noqa: ANN201 - an UpstreamOutput
        seconds = [int(n) / 16000 for n in wav_lens]
        boundaries = [[self.every * i for i in range(1, int(s / self.every))] for s in seconds]
        return self.upstream(wavs, wav_lens, boundaries=boundaries)


def build(upstream: str, model: dict, k: int, segmentation: str) -> nn.Module:
    """The seeded variant at downsample k (k = 1: the uncompressed model)."""
    torch.manual_seed(0)
    extra = {} if k == 1 else {"downsample": k, **SEGMENTATIONS[segmentation]}
    net = load_upstream(upstream, **model, **extra).eval()
    if "segment_units" in extra:
        net.unit_centroids.normal_()
    return WithBoundaries(net) if extra.get("segmentation") == "alignment" else net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default="melhubert_base")
    parser.add_argument("--model", default=json.dumps(DEMO), help="JSON overrides (default: the demo's size)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = json.loads(args.model)
    samples = int(args.seconds * 16000)
    wavs = 0.1 * torch.randn(1, samples, generator=torch.Generator().manual_seed(0))
    wav_lens = torch.tensor([samples])
    print(f"{args.upstream} {model}, {args.seconds:g} s, {args.threads} thread(s)")
    print(f"{'variant':<14}{'rate Hz':>8}{'frames':>8}{'GMACs/s':>9}{'x MACs':>8}{'wall ms':>9}{'x wall':>8}")
    base_macs = base_wall = 0.0
    for segmentation in SEGMENTATIONS:
        for k in range(1, 6):
            if k == 1 and segmentation != "fixed":
                continue
            net = build(args.upstream, model, k, segmentation)
            by_kind, _, frames = count_macs(net, wavs, wav_lens)
            macs = sum(by_kind.values()) / args.seconds
            wall = time_forward(net, wavs, wav_lens, args.repeats)
            if k == 1:
                base_macs, base_wall = macs, wall
            name = "none" if k == 1 else segmentation
            print(f"{name:<14}{50 / k:>8.1f}{frames:>8}{macs / 1e9:>9.3f}{macs / base_macs:>8.2f}"
                  f"{wall * 1e3:>9.1f}{wall / base_wall:>8.2f}")


if __name__ == "__main__":
    main()

"""Recurrent stacks on CPU: `RNNStack` on the padded batch against the same layers over a PackedSequence.

APC's residual GRU stack (and CPC's LSTM) read padded batches of unequal lengths. `speechrep.nn.rnn.RNNStack`
runs each layer on the padded tensor directly (a unidirectional recurrence reaches an utterance's padding only
after its valid frames, so those frames come out the same); the peer is PyTorch's PackedSequence path,
`pack_padded_sequence` → layer → `pad_packed_sequence`, on the same weights and batch. Reported: the best
forward + backward wall time over repeats (the two alternate, so both see the same machine load), their ratio,
and the largest difference between the two outputs on valid frames.

    .venv/bin/python benchmarks/rnn_speed.py --threads 1 --hidden 256 --layers 3 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechrep.nn.rnn import RNNStack
from speechrep.upstream.base import padding_mask


def packed_forward(stack: RNNStack, x: Tensor, lengths: Tensor) -> list[Tensor]:
    """The stack's layers over PackedSequences (the peer), residual and padding as in `RNNStack`."""
    outputs = []
    for i, layer in enumerate(stack.layers):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out = pad_packed_sequence(layer(packed)[0], batch_first=True, total_length=x.shape[1])[0]
        if stack.residual and i > 0:
            out = out + x * padding_mask(lengths, x.shape[1])[..., None]
        outputs.append(out)
        x = out
    return outputs


def timed(fn, x: Tensor) -> float:
    started = time.perf_counter()
    sum(o.square().mean() for o in fn(x)).backward()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lengths", default="750,700,600,500", help="frames per utterance (100 per second)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stack = RNNStack(80, args.hidden, args.layers, args.cell, residual=True)
    lengths = torch.tensor([int(n) for n in args.lengths.split(",")])
    x = torch.randn(len(lengths), int(lengths.max()), 80) * padding_mask(lengths, int(lengths.max()))[..., None]
    with torch.no_grad():
        ours, peer = stack(x, lengths), packed_forward(stack, x, lengths)
    valid = padding_mask(lengths, x.shape[1])
    max_diff = max(float((a - b)[valid].abs().max()) for a, b in zip(ours, peer))
    times = {"padded": [], "packed": []}
    for _ in range(args.repeats):
        times["padded"].append(timed(lambda t: stack(t, lengths), x))
        times["packed"].append(timed(lambda t: packed_forward(stack, t, lengths), x))
    padded, packed = min(times["padded"]), min(times["packed"])
    print(json.dumps({"cell": args.cell, "hidden": args.hidden, "layers": args.layers, "threads": args.threads,
                      "lengths": lengths.tolist(), "padded_s": round(padded, 3), "packed_s": round(packed, 3),
                      "padded_over_packed": round(padded / packed, 3), "max_abs_diff": max_diff}, indent=1))


if __name__ == "__main__":
    main()

"""What an upstream costs: parameters, multiply-accumulates per second of audio, wall time and peak memory.

    report = profile_upstream(load_upstream("hubert_base"), seconds=[1.0, 10.0])
    print(format_profile(report))

MACs are counted by `torch.utils.flop_counter.FlopCounterMode` (one MAC = two FLOPs) on one utterance of each
length, under the math backend of `scaled_dot_product_attention`: PyTorch's fused CPU attention kernel is not
counted by the flop counter, so without the math backend the attention products (QKᵀ and the weighted sum of
values) would silently be missing. Counts are split by module kind — front end (waveform CNN or filterbank,
input projection), positional convolution, attention projections (q, k, v, out and WavLM's gate; a skipped
layer's folded identity attention), attention products, feed-forward, recurrent layers, other — and per
transformer layer. Parameters are split the same way. Wall time is the median of `repeats` forward passes
under `inference_mode` with the default (fast) attention; peak memory is the process's peak resident set
size after the pass (CPU) or the peak allocated CUDA memory (GPU). An upstream that pools its frames
between given boundaries (sequence compression, `needs_boundaries`) gets one every 100 ms: its cost
depends on how many segments it makes, which its own `downsample` fixes, not on where they lie.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from speechrep.errors import ConfigError
from speechrep.nn.transformer import (
    ConvPositionalEmbedding,
    FeedForward,
    IdentityAttention,
    SelfAttention,
    TransformerLayer,
)

KINDS = ("front end", "positional conv", "attention projections", "attention products", "feed-forward",
         "recurrent", "other")


@dataclass
class LengthProfile:
    """The cost of one utterance of `seconds` seconds."""

    seconds: float
    frames: int
    macs: int
    macs_by_kind: dict[str, int]
    macs_by_layer: list[int]  # one entry per transformer layer, in order
    wall_time_s: float
    peak_memory_mib: float

    @property
    def gmacs_per_second(self) -> float:
        """Giga-MACs per second of audio."""
        return self.macs / 1e9 / self.seconds


@dataclass
class UpstreamProfile:
    """Parameters of an upstream and its cost at each profiled length."""

    name: str
    params: int
    params_by_kind: dict[str, int]
    lengths: list[LengthProfile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, with the GMACs per audio second of each length."""
        data = asdict(self)
        for row, length in zip(data["lengths"], self.lengths):
            row["gmacs_per_second"] = length.gmacs_per_second
        return data


def _module_kinds(model: nn.Module) -> tuple[dict[str, str], dict[str, int]]:
    """Kind of every module (by qualified name, the root is "") and the transformer layer index it lies in."""
    kinds: dict[str, str] = {}
    layer_of: dict[str, int] = {}
    layer_index = {id(m): i for i, m in enumerate(m for m in model.modules() if isinstance(m, TransformerLayer))}
    for name, module in model.named_modules():
        parts = name.split(".") if name else []
        ancestors = [model.get_submodule(".".join(parts[:i])) for i in range(len(parts) + 1)]
        kind = "front end"
        for ancestor in ancestors:
            if isinstance(ancestor, SelfAttention):
                kind = "attention products" if ancestor is module else "attention projections"
                break
            if isinstance(ancestor, IdentityAttention):  # the folded value and output projections
                kind = "attention projections"
                break
            if isinstance(ancestor, FeedForward):
                kind = "feed-forward"
                break
            if isinstance(ancestor, ConvPositionalEmbedding):
                kind = "positional conv"
                break
            if isinstance(ancestor, nn.RNNBase):
                kind = "recurrent"
                break
            if isinstance(ancestor, TransformerLayer):
                kind = "other"  # layer norms and residuals of a layer
        kinds[name] = kind
        for ancestor in ancestors:
            if id(ancestor) in layer_index:
                layer_of[name] = layer_index[id(ancestor)]
    return kinds, layer_of


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per module kind (each parameter counted once, by the module that owns it)."""
    kinds, _ = _module_kinds(model)
    counts = dict.fromkeys(KINDS, 0)
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            counts[kinds[name]] += p.numel()
    return counts


def count_macs(model: nn.Module, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[dict[str, int], list[int], int]:
    """MACs of one forward pass by kind and by transformer layer, and the output frame count."""
    kinds, layer_of = _module_kinds(model)
    counter = FlopCounterMode(display=False)
    # no_grad rather than inference_mode: weight-norm parametrisations fail under the counter in inference mode
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        out = forward_for_profile(model, wavs, wav_lens)
    totals = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    by_name: dict[str, int] = {}
    for fqn, flops in totals.items():  # the counter names modules "<RootClass>.a.b"
        if fqn == root:
            by_name[""] = flops
        elif fqn.startswith(root + "."):
            by_name[fqn[len(root) + 1:]] = flops
    by_kind = dict.fromkeys(KINDS, 0)
    num_layers = sum(isinstance(m, TransformerLayer) for m in model.modules())
    by_layer = [0] * num_layers
    # The counter credits an op to every module on the call stack: a module's own MACs are its count minus
    # those of the modules called from it (its nearest counted descendants; containers are never called).
    own = dict(by_name)
    for name, flops in by_name.items():
        if name:
            parent = name.rpartition(".")[0]
            while parent not in by_name:
                parent = parent.rpartition(".")[0]
            own[parent] -= flops
    for name, flops in own.items():
        kind = kinds[name] if name else "other"
        by_kind[kind] += flops // 2
        if name in layer_of:
            by_layer[layer_of[name]] += flops // 2
    return by_kind, by_layer, int(out.lengths[0])


def forward_for_profile(model: nn.Module, wavs: torch.Tensor, wav_lens: torch.Tensor) -> Any:
    """`model(wavs, wav_lens)`; an upstream that needs segment boundaries gets one every 100 ms."""
    if getattr(model, "needs_boundaries", False):
        sample_rate = int(getattr(model, "sample_rate", 16000))
        boundaries = [[0.1 * i for i in range(1, int(10 * int(n) / sample_rate))] for n in wav_lens]
        return model(wavs, wav_lens, boundaries=boundaries)
    return model(wavs, wav_lens)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def time_forward(model: nn.Module, wavs: torch.Tensor, wav_lens: torch.Tensor, repeats: int = 3) -> float:
    """Median wall time in seconds of `repeats` forward passes (after one warm-up) under inference_mode."""
    timings = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            if wavs.device.type == "cuda":
                torch.cuda.synchronize(wavs.device)
            start = time.perf_counter()
            forward_for_profile(model, wavs, wav_lens)
            if wavs.device.type == "cuda":
                torch.cuda.synchronize(wavs.device)
            if i:  # the first pass warms caches and allocators
                timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def profile_upstream(model: nn.Module, seconds: Sequence[float] = (1.0, 10.0), repeats: int = 3,
                     name: str = "", seed: int = 0) -> UpstreamProfile:
    """Parameters of `model` and, for each length in `seconds`, its MACs, wall time and peak memory."""
    if not seconds or any(not s > 0 for s in seconds):
        raise ConfigError(f"profile: --seconds must be positive numbers, got {list(seconds)}")
    if repeats < 1:
        raise ConfigError(f"profile: --repeats must be at least 1, got {repeats}")
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    params_by_kind = count_parameters(model)
    report = UpstreamProfile(name or type(model).__name__, sum(params_by_kind.values()), params_by_kind)
    generator = torch.Generator().manual_seed(seed)
    sample_rate = int(getattr(model, "sample_rate", 16000))
    for length in sorted(seconds):  # increasing, so each peak reading belongs to its own length
        samples = int(round(length * sample_rate))
        wavs = (0.1 * torch.randn(1, samples, generator=generator)).to(device)
        wav_lens = torch.tensor([samples], device=device)
        by_kind, by_layer, frames = count_macs(model, wavs, wav_lens)
        wall = time_forward(model, wavs, wav_lens, repeats)
        report.lengths.append(LengthProfile(length, frames, sum(by_kind.values()), by_kind, by_layer, wall,
                                            _peak_memory_mib(device)))
    return report


def format_profile(report: UpstreamProfile) -> str:
    """A plain-text table: parameters by kind, then MACs per audio second by kind for each length."""
    lines = [f"{report.name}: {report.params / 1e6:.2f} M parameters"]
    lines += [f"  {kind:<22} {count / 1e6:9.3f} M" for kind, count in report.params_by_kind.items() if count]
    header = "  ".join(f"{p.seconds:>8g} s" for p in report.lengths)
    lines.append(f"{'GMACs per audio second':<24}{header}")
    for kind in KINDS:
        if any(p.macs_by_kind[kind] for p in report.lengths):
            cells = "  ".join(f"{p.macs_by_kind[kind] / 1e9 / p.seconds:10.3f}" for p in report.lengths)
            lines.append(f"  {kind:<22}{cells}")
    lines.append(f"  {'total':<22}" + "  ".join(f"{p.gmacs_per_second:10.3f}" for p in report.lengths))
    lines.append(f"  {'frames':<22}" + "  ".join(f"{p.frames:10d}" for p in report.lengths))
    lines.append(f"  {'wall time (ms)':<22}" + "  ".join(f"{p.wall_time_s * 1e3:10.1f}" for p in report.lengths))
    lines.append(f"  {'peak memory (MiB)':<22}" + "  ".join(f"{p.peak_memory_mib:10.0f}" for p in report.lengths))
    return "\n".join(lines) + "\n"

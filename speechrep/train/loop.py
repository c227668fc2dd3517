"""The one training loop: `TrainConfig`, `TrainState` and `train(...)`, in nanoGPT's order.

Per optimizer step: draw `grad_accum` micro-batches, forward under autocast, backward (DDP gradient sync only on
the last micro-step), clip the global grad norm, optimizer + LR scheduler step, `after_step`, log every
`log_every` steps, and every `eval_every` steps (and at the end) evaluate on dev and write
`checkpoints/last.pt` (+ `best.pt` when the dev metric improves). Starting `train` again on the same run_dir
resumes from `last.pt`; a finished run returns at once.

Under torchrun (or srun) with `parallel: ddp` the model is wrapped in DistributedDataParallel; with
`parallel: fsdp` a copy is sharded with FSDP2 (`fully_shard`, see `speechrep.train.distributed`): gradients
are reduce-scattered, each rank keeps 1/world of the weights, gradients and AdamW state, and the full state is
gathered for evaluation and checkpoints, which keep the DDP layout (a DDP checkpoint resumes under FSDP and
back).

A kill at any point leaves the two consistent: `last.pt` is written before `best.pt`, so the only gap a kill
can leave is `last.pt` naming its own step as best while `best.pt` still holds an older one; a resume then
copies `last.pt` to `best.pt` (`_reconcile_best`). Temporary files of a killed write are removed on resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Protocol, TypeVar, Union, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from speechrep.config import config_to_dict
from speechrep.errors import CheckpointError, ConfigError, TrainingError
from speechrep.storage import remove_temporaries
from speechrep.train.checkpoint import (capture_rng_state, load_checkpoint, read_checkpoint, restore_rng_state,
                                        save_checkpoint, seed_everything)
from speechrep.train.distributed import (gather_full_state, init_distributed, rank_and_world,
                                         release_full_weights, resolve_device, restore_full_weights,
                                         shard_model, shard_optimizer_state)
from speechrep.train.run_dir import MetricsLogger
from speechrep.train.schedule import make_scheduler

log = logging.getLogger(__name__)

Batch = TypeVar("Batch")
LossOutput = Union[Tensor, tuple[Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and hardware settings of one training run."""

    max_steps: int = 1000                 # optimizer steps (each = grad_accum micro-batches)
    lr: float = 1e-3                      # peak LR (AdamW) for groups that do not set their own
    weight_decay: float = 0.0             # decoupled; default groups exempt biases and norms (1-D params)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0                 # linear warm-up from lr/warmup_steps to lr
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # after warm-up; linear/cosine decay to 0
    grad_accum: int = 1                   # micro-batches per optimizer step
    clip_norm: float | None = 1.0         # max global grad norm; None = no clipping
    eval_every: int = 500                 # steps between dev evaluations + checkpoints (and at the end)
    log_every: int = 50                   # steps between train-scalar logs
    seed: int = 0                         # python/numpy/torch seed at the start of a fresh run (+ rank)
    amp: Literal["none", "bf16"] = "bf16"  # bf16 autocast on CUDA; CPU stays fp32 unless amp_on_cpu
    amp_on_cpu: bool = False              # also autocast to bf16 on CPU (slow on most CPUs)
    metric: str = "loss"                  # key of evaluate()'s dict that picks checkpoints/best.pt
    metric_mode: Literal["min", "max"] = "min"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    ddp_find_unused: bool = False         # DDP find_unused_parameters (for models that skip some parameters)
    parallel: Literal["ddp", "fsdp"] = "ddp"  # with >1 process: DDP, or FSDP2 (weights/grads/AdamW sharded)

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"key {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"key 'warmup_steps': must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ConfigError(f"key 'lr': must be > 0, got {self.lr}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"key 'clip_norm': must be > 0 or null, got {self.clip_norm}")


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, data position, best dev metric (rank 0) and the last evaluation."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0               # batches of `epoch` already consumed
    best_metric: float | None = None
    best_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)


def train(model: nn.Module, batches: Callable[[int], Iterable[Batch]],
          loss_fn: Callable[[nn.Module, Batch], LossOutput], cfg: TrainConfig, run_dir: Path,
          evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          param_groups: list[dict[str, Any]] | None = None,
          after_step: Callable[[nn.Module, int], None] | None = None) -> TrainState:
    """Train `model` for `cfg.max_steps` optimizer steps, resuming from `run_dir/checkpoints/last.pt` if present."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    distributed = init_distributed(device)
    rank, world = rank_and_world()
    master = rank == 0
    sharded = distributed and cfg.parallel == "fsdp"
    model.to(device)
    groups = param_groups if param_groups is not None else default_param_groups(model, cfg.weight_decay)
    groups = [{**g, "params": list(g["params"])} for g in groups]  # generators are read once

    state, rng, ckpt = TrainState(), None, None
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    if master:  # half-written checkpoints, metrics or results of a killed run
        for folder in (run_dir, last_path.parent):
            if folder.is_dir():
                remove_temporaries(folder)
    if last_path.is_file():
        ckpt = load_checkpoint(last_path, model)
    # A finished run returns below without any collective, so a rank may reach it alone (the benchmark's rank 0
    # re-opens the runs of the chosen learning rate); every other start is checked by all ranks together. A rank
    # that alone sees a finished last.pt (node-local disks) thus returns, and the others wait at the check.
    if distributed and not (ckpt is not None and ckpt["step"] >= cfg.max_steps):
        _check_same_checkpoint_view(last_path, device)
    if ckpt is not None:
        if master:
            _reconcile_best(ckpt, last_path, best_path)
        state = TrainState(ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["best_metric"],
                           ckpt["best_step"], dict(ckpt["last_eval"]))
        rng = ckpt["rng"][rank] if ckpt["world_size"] == world else None
        if ckpt["config"] != config_to_dict(cfg):
            log.warning("%s: resuming with a TrainConfig that differs from the checkpoint's", last_path)
        log.info("resuming %s from step %d (epoch %d, batch %d)", run_dir, state.step, state.epoch,
                 state.batch_in_epoch)
        if state.step >= cfg.max_steps:
            log.info("%s already finished (%d/%d steps)", run_dir, state.step, cfg.max_steps)
            return state
    else:
        seed_everything(cfg.seed + rank)
    # `net` is the module that trains: the model itself, or its FSDP2-sharded copy (`model` then holds the
    # full weights only around evaluation and after the last step).
    net = shard_model(model, device) if sharded else model
    if sharded:
        groups = _same_groups_in(net, model, groups)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.max_steps, cfg.warmup_steps, cfg.schedule)
    if ckpt is not None:
        optimizer.load_state_dict(shard_optimizer_state(ckpt["optimizer"], optimizer) if sharded
                                  else ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    train_model: nn.Module = net
    if distributed and not sharded:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=cfg.ddp_find_unused)

    # Data position: replay the epoch's deterministic batches up to where the checkpoint stopped, then restore
    # the RNG so that everything after (dropout, masking, augmentation) matches the uninterrupted run.
    data = _skip(iter(batches(state.epoch)), state.batch_in_epoch, state.epoch)
    if rng is not None:
        restore_rng_state(rng)
    elif state.step > 0:
        log.warning("checkpoint was written by %s processes, now %d: RNG reseeded", ckpt["world_size"], world)
        seed_everything(cfg.seed + rank + state.step)

    def next_batch() -> Any:
        nonlocal data
        for _ in range(2):
            try:
                batch = next(data)
                state.batch_in_epoch += 1
                return to_device(batch, device)
            except StopIteration:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                data = iter(batches(state.epoch))
        raise RuntimeError(f"batches({state.epoch}) yielded no batch")

    use_bf16 = cfg.amp == "bf16" and (device.type == "cuda" or cfg.amp_on_cpu)
    logger = MetricsLogger(run_dir, resume_step=state.step, enabled=master)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"train {run_dir.name}", dynamic_ncols=True,
               disable=not (master and sys.stderr.isatty()))
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    net.train()
    try:
        while state.step < cfg.max_steps:
            lr = scheduler.get_last_lr()[0]
            loss_sum = torch.zeros((), device=device)
            extras: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                batch = next_batch()
                last_micro = micro == cfg.grad_accum - 1
                # Only the last micro-step all-reduces gradients; the earlier ones accumulate locally.
                sync = train_model.no_sync() if distributed and not sharded and not last_micro \
                    else contextlib.nullcontext()
                if sharded:
                    train_model.set_requires_gradient_sync(last_micro)
                with sync:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        out = loss_fn(train_model, batch)
                    loss, scalars = out if isinstance(out, tuple) else (out, {})
                    (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach().float()
                for k, v in scalars.items():
                    extras[k] = extras.get(k, 0.0) + float(v) / cfg.grad_accum
            # max_norm=inf measures the norm without clipping, so grad_norm is always logged.
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_norm or math.inf)
            if isinstance(grad_norm, DTensor):  # FSDP2: the global norm, replicated
                grad_norm = grad_norm.full_tensor()
            finite = torch.stack([loss_sum, grad_norm.to(loss_sum)]).isfinite().all().float()
            if distributed:  # every rank must stop together, or the others wait forever in the next all-reduce
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not finite.item():
                raise TrainingError(f"non-finite loss or gradient at step {state.step + 1} (loss "
                                         f"{loss_sum.item() / cfg.grad_accum}; resume point: {last_path})")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if after_step is not None:
                after_step(net, state.step)
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                values = {"loss": loss_sum.item() / cfg.grad_accum, **extras}
                if distributed:
                    values = _mean_over_ranks(values, device)
                values["lr"] = lr
                values["grad_norm"] = float(grad_norm)
                logger.log("train", state.step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if master:
                    log.info("step %d/%d %s", state.step, cfg.max_steps, _fmt(values))

            if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
                improved = False
                final = state.step == cfg.max_steps
                if sharded:  # full weights into `model` (rank 0; every rank after the last step)
                    full_model, full_optim = gather_full_state(net, optimizer, keep_model=master or final,
                                                               keep_optimizer=master)
                    if full_model is not None:
                        restore_full_weights(model, full_model)
                if evaluate is not None and master:
                    model.eval()
                    with torch.no_grad():
                        state.last_eval = {k: float(v) for k, v in evaluate(model).items()}
                    model.train()
                    if cfg.metric not in state.last_eval:
                        raise ConfigError(f"key 'metric': {cfg.metric!r} is not among the dev metrics "
                                          f"({', '.join(state.last_eval)})")
                    value = state.last_eval[cfg.metric]
                    improved = state.best_metric is None or (value < state.best_metric if cfg.metric_mode == "min"
                                                             else value > state.best_metric)
                    if improved:
                        state.best_metric, state.best_step = value, state.step
                    logger.log("eval", state.step, state.last_eval)
                    log.info("eval step %d %s%s", state.step, _fmt(state.last_eval), " (best)" if improved else "")
                rng_states = [capture_rng_state()]
                if distributed:
                    rng_states = [None] * world
                    dist.all_gather_object(rng_states, capture_rng_state())
                if master:
                    ckpt = {"model": model.state_dict(),
                            "optimizer": full_optim if sharded else optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), **dataclasses.asdict(state),
                            "rng": rng_states, "world_size": world, "config": config_to_dict(cfg)}
                    # last before best: see the module docstring for why this order survives any kill
                    save_checkpoint(ckpt, last_path)
                    if improved:
                        save_checkpoint(ckpt, best_path)
                    ckpt = None
                if sharded and not final:
                    full_model = full_optim = None
                    release_full_weights(model)
                if distributed:
                    dist.barrier()
    finally:
        bar.close()
        logger.close()
    return state


def _check_same_checkpoint_view(last_path: Path, device: torch.device) -> None:
    """Every rank must see the same `last.pt` (or none): the run directory must be on a filesystem shared by
    all nodes, or the ranks would resume from different steps and wait on each other forever."""
    seen = torch.tensor([float(last_path.is_file())], device=device)
    low, high = seen.clone(), seen.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise CheckpointError(f"{last_path}: found by some ranks and not by others; a multi-node run needs "
                              "its run directory on a filesystem shared by all nodes")


def _same_groups_in(sharded: nn.Module, model: nn.Module,
                    groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`groups` (AdamW groups of `model`'s parameters) with each parameter replaced by the sharded copy's."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = dict(sharded.named_parameters())
    missing = [p for g in groups for p in g["params"] if id(p) not in names]
    if missing:
        raise ConfigError(f"parallel 'fsdp': {len(missing)} optimizer parameter(s) are not parameters of the "
                          f"trained {type(model).__name__}")
    return [{**g, "params": [params[names[id(p)]] for p in g["params"]]} for g in groups]


def _reconcile_best(last: dict[str, Any], last_path: Path, best_path: Path) -> None:
    """Make `best.pt` hold the step `last.pt` names as best, after a kill between writing the two."""
    best_step = last["best_step"]
    if best_step is None:
        return
    held = read_checkpoint(best_path).get("step") if best_path.is_file() else None
    if held == best_step:
        return
    if best_step == last["step"]:  # killed after last.pt, before best.pt: last.pt is that best checkpoint
        log.warning("%s: held step %s, not the best step %d that %s names (a killed write); copied %s",
                    best_path, held, best_step, last_path, last_path.name)
        save_checkpoint(last, best_path)
        return
    raise CheckpointError(f"{best_path}: holds step {held}, but {last_path} names best step {best_step}; "
                          "the run directory was changed by hand, start the run in a new one")


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: matrices with weight decay, biases/norm gains (1-D) without."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor inside a batch (tensors, dicts, lists, tuples, dataclasses) to `device`."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=device.type == "cuda")
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


@runtime_checkable
class Skippable(Protocol):
    """Batches that can move past the next `count` without producing them (e.g. without decoding audio)."""

    def skip(self, count: int) -> int: ...  # how many there were


def _skip(data: Iterator[Any], count: int, epoch: int) -> Iterator[Any]:
    done = data.skip(count) if isinstance(data, Skippable) else sum(1 for _ in itertools.islice(data, count))
    if done < count:
        raise RuntimeError(f"batches({epoch}) yielded {done} batches but the checkpoint had consumed "
                           f"{count}: the batches of an epoch must be the same on every call")
    return data


def _mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / dist.get_world_size() for k, v in zip(keys, t.tolist())}


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())

"""Process-group helpers for runs under `torchrun` or `srun` (gloo on CPU, NCCL on GPU), DDP and FSDP2.

Recipes shard their data by `rank_and_world()` before calling `train`; these helpers work before the process
group exists (they read torchrun's RANK / WORLD_SIZE / LOCAL_RANK environment variables, which
`speechrep.ranks` derives from SLURM's under `srun`) and after. Ranks are global ranks throughout: files are
written by global rank 0, seeds and data shards follow the global rank, and only the choice of GPU follows
the local rank, so 2 nodes x 1 process train exactly as 1 node x 2 processes.

FSDP2 (`TrainConfig.parallel = "fsdp"`): `shard_model` runs a sharded copy of the model (every module of every
`nn.ModuleList`, e.g. each Transformer layer, is one `fully_shard` unit; the root holds the rest) and frees
the original's parameters; `gather_full_state` all-gathers the full weights and optimizer state (kept on
rank 0, in the layout of a plain `optimizer.state_dict()`) for evaluation and checkpoints, and
`shard_optimizer_state` turns such a full optimizer state back into shards on resume, so DDP and FSDP
checkpoints are interchangeable.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from speechrep.ranks import local_rank, rank_and_world, resolve_device  # noqa: F401 (re-exported for recipes)

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True on the process that logs and saves (global rank 0)."""
    return rank_and_world()[0] == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group (NCCL on CUDA, else gloo) if WORLD_SIZE > 1; True when distributed.

    Rendezvous by the environment (`env://`): MASTER_ADDR / MASTER_PORT, RANK, WORLD_SIZE, as torchrun (static
    or c10d rendezvous) sets them for its workers and `speechrep.ranks` sets them under `srun`."""
    _, world = rank_and_world()
    if world <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def finish_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Give every rank `src`'s parameters and buffers (what DDP does when it wraps a model)."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """An FSDP2-sharded copy of `model` (same parameter names); the original keeps its buffers but its
    parameters are emptied until `restore_full_weights` refills them."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    broadcast_module(model)  # fully_shard keeps each rank's own slice: all start from rank 0's weights
    sharded = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = _shard_units(sharded)
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    log.info("FSDP2: %s sharded over %d ranks in %d units + the root", type(model).__name__,
             dist.get_world_size(), len(units))
    for param in model.parameters():
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    return sharded


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The children of the outermost `nn.ModuleList`s (Transformer layers, conv blocks), in module order."""
    units: list[nn.Module] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, nn.ModuleList):
            inside.append(name)
            units.extend(m for m in module if any(True for _ in m.parameters()))
    return units


def gather_full_state(sharded: nn.Module, optimizer: torch.optim.Optimizer, keep_model: bool,
                      keep_optimizer: bool
                      ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """(model state, optimizer state) as full CPU tensors from FSDP2 shards; None for a part not kept.

    A collective: every rank calls it, tensor by tensor, so a rank that does not keep a part holds one full
    tensor of it at a time. The optimizer state has the layout of `optimizer.state_dict()` of the unsharded
    model."""
    from torch.distributed.tensor import DTensor

    def full(value: Any, keep: bool) -> Any:
        if isinstance(value, DTensor):
            value = value.full_tensor()
        if not keep:
            return None
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value

    model_state = {k: full(v, keep_model) for k, v in sharded.state_dict().items()}
    optim = optimizer.state_dict()
    optim_state = {i: {k: full(v, keep_optimizer) for k, v in s.items()} for i, s in optim["state"].items()}
    return (model_state if keep_model else None,
            {"state": optim_state, "param_groups": optim["param_groups"]} if keep_optimizer else None)


def restore_full_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put full weights (from `gather_full_state`) back into the original model that `shard_model` emptied."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.data = state[name].to(param.device, param.dtype)
        for name, buffer in model.named_buffers():
            if name in state:
                buffer.copy_(state[name])


def release_full_weights(model: nn.Module) -> None:
    """Empty the original model's parameters again (the sharded copy trains)."""
    for param in model.parameters():
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A full optimizer state dict (any checkpoint of the loop) with each tensor shaped like its parameter
    turned into that parameter's shard, ready for `optimizer.load_state_dict` on FSDP2 parameters."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded = {}
    for index, entry in state["state"].items():
        param = params[int(index)]
        sharded[index] = {
            k: distribute_tensor(v.to(param.device), param.device_mesh, param.placements)
            if isinstance(param, DTensor) and isinstance(v, torch.Tensor) and v.shape == param.shape else v
            for k, v in entry.items()}
    return {"state": sharded, "param_groups": state["param_groups"]}

"""The shared training loop and run directories, used by every pre-training method and downstream task.

Minimal recipe (copy and adapt):

    from dataclasses import dataclass, field
    from pathlib import Path
    import torch
    from speechrep.config import load_config
    from speechrep.train import (TrainConfig, load_checkpoint, prepare_run_dir, rank_and_world, seed_everything,
                                 train, write_results)

    @dataclass
    class ToyConfig:
        hidden: int = 32
        batch_size: int = 8
        train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=200, lr=1e-3, eval_every=50))

    def run(cfg: ToyConfig, run_dir: Path) -> dict[str, float]:
        prepare_run_dir(run_dir, cfg)                      # config.yaml with seed, versions, git revision
        seed_everything(cfg.train.seed)                    # same initial weights on every rank
        model = torch.nn.Sequential(torch.nn.Linear(4, cfg.hidden), torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, 1))
        x, y = torch.randn(256, 4), torch.randn(256, 1)
        rank, world = rank_and_world()

        def batches(epoch: int):                           # deterministic given epoch; this rank's shard
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.train.seed + epoch))
            for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                idx = order[i:i + cfg.batch_size][rank::world]
                yield x[idx], y[idx]

        def loss_fn(model, batch):                         # call model(...) so DDP sees the forward
            inputs, targets = batch
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            return loss, {"rmse": loss.detach().sqrt().item()}  # extra scalars are optional

        def evaluate(model) -> dict[str, float]:           # dev set only; runs on rank 0 under no_grad
            return {"loss": torch.nn.functional.mse_loss(model(x[:64]), y[:64]).item()}

        train(model, batches, loss_fn, cfg.train, run_dir, evaluate=evaluate)
        load_checkpoint(run_dir / "checkpoints" / "best.pt", model)   # best by the dev metric, then test once
        results = evaluate(model)
        write_results(run_dir, results)
        return results

    cfg = load_config(ToyConfig, None, ["train.max_steps=100", "hidden=64"])
    run(cfg, Path("runs/toy"))

Contract of `train(model, batches, loss_fn, cfg, run_dir, evaluate=None, param_groups=None, after_step=None)`:
- `batches(epoch)` returns the batches of one epoch (tensors, dicts, lists, tuples or dataclasses of tensors;
  the loop moves them to the device). It must give the same batches every time it is called with the same
  epoch (seed samplers with `seed + epoch`, e.g. lhotse `sampler.set_epoch(epoch)`; never the global RNG when
  the iterator is created): resuming replays the epoch up to the saved position. Under torchrun each rank
  yields its own shard, with the same number of batches on every rank (else DDP waits forever). Epochs roll
  over until `max_steps` optimizer steps are done.
- `loss_fn(model, batch)` returns the mean loss of the batch, or `(loss, {"name": float, ...})` with extra
  scalars to log. `model` is the DDP wrapper under torchrun: call `model(...)`, not its other methods.
- `evaluate(model)` returns dev metrics; `cfg.metric` (mode `cfg.metric_mode`) picks `checkpoints/best.pt`
  (no `evaluate`: only last.pt). Under torchrun it runs on rank 0 only while the others wait, so keep it
  well under the process-group timeout. Scalars from `loss_fn` are averaged over ranks: same keys on each.
- `param_groups`: AdamW groups, e.g. `[{"params": head.parameters()}, {"params": upstream.parameters(),
  "lr": 1e-5}]`; groups without "lr" use `cfg.lr`; every group follows the warm-up/decay schedule.
  Default: all parameters with requires_grad (no weight decay on 1-D ones).
- `after_step(model, step)` runs after each optimizer step (EMA teacher, temperature schedule, ...).
- The loop calls `model.train()` (and `model.eval()` around `evaluate`); a frozen part that must stay in eval
  mode (e.g. a frozen upstream's dropout) overrides `train()` in the recipe's model. Parameters that get no
  gradient under torchrun need `requires_grad=False` or `cfg.ddp_find_unused=True`.
- Run directory: config.yaml (from `prepare_run_dir`), checkpoints/last.pt and best.pt, tensorboard/,
  metrics.jsonl ({"event": "train"|"eval", "step": ..., scalars}), results.json (`write_results`).
- Resume: call `train` again with the same arguments; it continues from last.pt (written every `eval_every`
  steps and at the end) and ends bit-identical to an uninterrupted run on CPU. A finished run returns at once
  (its weights loaded into `model`). Under torchrun only rank 0 logs, evaluates and saves.
- Several processes (torchrun on one or many nodes, or srun): `cfg.parallel` "ddp" (default) or "fsdp"
  (FSDP2: `model` is trained through a sharded copy; `loss_fn` and `after_step` get that copy, `evaluate` gets
  `model` with the full weights on rank 0; checkpoints stay full, in the DDP layout). The run directory must be
  on a filesystem every node sees.
"""
from speechrep.train.checkpoint import (load_checkpoint, read_checkpoint, save_checkpoint, seed_everything,
                                        write_results)
from speechrep.train.distributed import (finish_distributed, init_distributed, is_main_process, rank_and_world,
                                         resolve_device)
from speechrep.train.loop import TrainConfig, TrainState, default_param_groups, to_device, train
from speechrep.train.run_dir import prepare_run_dir, read_metrics
from speechrep.train.schedule import lr_factor

__all__ = [
    "TrainConfig", "TrainState", "train", "default_param_groups", "to_device", "lr_factor",
    "prepare_run_dir", "read_metrics", "load_checkpoint", "read_checkpoint", "save_checkpoint", "write_results",
    "seed_everything", "rank_and_world", "is_main_process", "init_distributed", "finish_distributed", "resolve_device",
]

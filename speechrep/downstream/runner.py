"""The one SUPERB runner: every (upstream, task) pair trained and evaluated the same way.

    rows = benchmark(BenchmarkConfig(["fbank", "hubert_tiny"], ["ks", "pr"], corpus_dir, out_dir, preset="tiny"))

Protocol: a tuning strategy prepares the upstream (`frozen` by default, `full` = `--finetune`; see
`speechrep.tuning`), a learnable softmax-weighted sum of its layers feeds the task's light head, the head
trains on train, `checkpoints/best.pt` is picked by the dev metric only, and the test split is loaded and
evaluated once, at the end, with the best checkpoint. Layout of `out_dir`:

    config.yaml                               the BenchmarkConfig of the last invocation
    features/<upstream>-<fingerprint>/        hidden states of frozen upstreams (see downstream.features)
    <upstream>/<task>/results.json            the pair's result; present = done, a rerun skips it
    <upstream>/<task>/[lr<lr>/][<sub run>/]   run directories of the shared training loop (resumable)

Upstream names: any hub name or model path (`LABEL=PATH` names its row); `NAME@random` is the same
architecture with freshly initialised weights (the untrained control); `fbank_global` is the raw 80-dim
filterbank standardised with mean/std of the task's train split (SUPERB's `fbank` normalises each utterance,
which pools to a constant under mean pooling).

`out_dir` is held by one benchmark at a time and records the settings that decide its numbers (corpus,
preset, tuning, LR sweep, overrides, random init); each pair folder records its upstream's identity
(`upstream_identity`: the weights fingerprint). A rerun with other settings, or an upstream path whose weights changed, is a one-line
OutputError naming what changed, unless `overwrite` starts over. Adding upstreams or tasks is fine.

results.json holds dev and test metrics, the learned layer weights, parameter counts (upstream, trainable)
and wall time (seconds of the invocations that completed each run; a killed invocation's time is not counted).

With `lr_sweep`, each learning rate trains in its own `lr<lr>/` run, the best mean dev metric wins, and only
the winner is evaluated on test. A task with sub-runs (ER folds) reports the mean over them of dev and test.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lhotse import CutSet
from torch import nn

from speechrep.audio.conditions import Condition, parse_conditions
from speechrep.config import CONFIG_ROOT, config_to_dict, load_config, save_config
from speechrep.data.batching import load_cuts
from speechrep.downstream.benchmark_config import BenchmarkConfig
from speechrep.downstream.features import (CorpusNormalizer, DownstreamModel, FeatureCache, FeatureSource,
                                          condition_others, upstream_fingerprint)
from speechrep.downstream.tasks import TASKS, TaskParts, TaskSpec, get_task
from speechrep.errors import ConfigError
from speechrep.storage import SETTINGS_NAME, OutputError, OutputFolder, disk_errors
from speechrep.train import (TrainState, is_main_process, load_checkpoint, prepare_run_dir, seed_everything,
                             train, write_results)
from speechrep.train.distributed import resolve_device
from speechrep.tuning import TUNINGS, TuningStrategy, get_tuning
from speechrep.upstream.feature_store import FeatureStore

log = logging.getLogger(__name__)

CONFIG_DIR = CONFIG_ROOT / "downstream"
RANDOM_SUFFIX = "@random"
GLOBAL_FBANK = "fbank_global"
RANDOM_INIT_SEED = 0
FROZEN = TUNINGS["frozen"]


# ------------------------------------------------------------------------------------------------- upstreams

@dataclass(frozen=True)
class UpstreamChoice:
    """How one leaderboard row's upstream is built."""

    label: str  # row name and folder name under out_dir, e.g. "hubert_tiny@random"
    source: str  # what the hub loads: a registry name or a directory
    random_init: bool  # same architecture, fresh weights
    corpus_norm: bool  # standardise each layer with train-split statistics (fbank_global)


def parse_upstream(name: str, random_init: bool = False) -> UpstreamChoice:
    """Turn a command-line upstream into a choice: `hubert_tiny`, `runs/x/upstream`, `LABEL=PATH`,
    `fbank_global`, each optionally suffixed `@random`. A path's row is named after its folder (the run folder
    for a pre-training export `RUN/upstream`) unless `LABEL=` names it."""
    label, sep, source = name.partition("=")
    if not sep:
        label, source = "", name
    random_init = random_init or source.endswith(RANDOM_SUFFIX) or label.endswith(RANDOM_SUFFIX)
    source, label = source.removesuffix(RANDOM_SUFFIX), label.removesuffix(RANDOM_SUFFIX)
    corpus_norm = source == GLOBAL_FBANK
    if not label:
        path = Path(source)
        is_path = "/" in source or path.exists() or path.suffix in (".pt", ".safetensors")
        label = (path.parent.name if path.name == "upstream" and path.parent.name else path.name) if is_path \
            else source
    if not label or "/" in label:
        raise ConfigError(f"--upstream {name!r}: cannot name this upstream; use LABEL=PATH")
    return UpstreamChoice(label + (RANDOM_SUFFIX if random_init else ""),
                          "fbank_raw" if corpus_norm else source, random_init, corpus_norm)


def load_upstream_module(choice: UpstreamChoice) -> nn.Module:
    """Build the upstream of a choice (a registry name without weights is seeded from its name, so every run
    gets the same model); random-init re-initialises every weight with a fixed seed."""
    from speechrep.upstream.extract import load_upstream_flag

    upstream = load_upstream_flag(choice.source)
    if choice.random_init:
        reinitialise(upstream, RANDOM_INIT_SEED)
    return upstream


def reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh random weights for every parameter, reproducibly: each submodule's `reset_parameters`, then
    N(0, 0.02) for the parameters no reset owns (mask embeddings, weight-norm factors)."""
    reached: set[int] = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                reached.update(id(p) for p in sub.parameters(recurse=False))
        for p in module.parameters():
            if id(p) not in reached:
                nn.init.normal_(p, std=0.02)


def upstream_identity(choice: UpstreamChoice, upstream: nn.Module) -> str:
    """What a row was computed with: the fingerprint of the upstream's weights (a checkpoint, an export, a
    seeded `@random` control, a registry name's name-seeded weights, a parameter-free baseline)."""
    return upstream_fingerprint(upstream)


# --------------------------------------------------------------------------------------------------- configs

def load_task_config(spec: TaskSpec, preset: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """A task's config: dataclass defaults ← configs/downstream/<task>.yaml ← preset file ← overrides.

    A preset is `configs/downstream/<preset>/<task>.yaml`, layered on the task's file as pre-training presets
    are (`speechrep.config.load_config`). An override `key=value` applies to every task; `<task>.key=value`
    (e.g. `pr.train.lr=1e-2`) to one task.
    """
    base = CONFIG_DIR / f"{spec.name}.yaml"
    paths = [base] if base.is_file() else []
    if preset is not None:
        preset_file = CONFIG_DIR / preset / f"{spec.name}.yaml"
        if not preset_file.is_file():
            raise ConfigError(f"{preset_file}: no preset {preset!r} for task {spec.name!r}")
        paths.append(preset_file)
    cfg = load_config(spec.config, paths, task_overrides(spec.name, overrides))
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ConfigError(f"{spec.name}: train_fraction={cfg.train_fraction}: expected a share in (0, 1]")
    return cfg


def task_overrides(task: str, overrides: Sequence[str]) -> list[str]:
    """The overrides that apply to `task`: every `key=value`, and its own `task.key=value` without the prefix."""
    mine = []
    for item in overrides:
        first, _, rest = item.partition(".")
        if first not in TASKS:
            mine.append(item)
        elif first == task:
            mine.append(rest)
    return mine


def check_overrides(tasks: Sequence[str], overrides: Sequence[str]) -> None:
    """A `TASK.key=value` override must name a task being run (otherwise it would be silently ignored)."""
    for item in overrides:
        first = item.partition("=")[0].partition(".")[0].strip()
        if first in TASKS and first not in tasks:
            raise ConfigError(f"override {item!r}: task {first!r} is not in --tasks ({','.join(tasks)})")


# ----------------------------------------------------------------------------------------------- one run

def _count(params) -> int:  # noqa: ANN001 - any iterable of parameters
    return sum(p.numel() for p in params)


def training_share(cuts: CutSet, fraction: float, seed: int) -> CutSet:
    """A seeded random `fraction` of `cuts` (at least one), in their original order: `train_fraction=`."""
    every = list(cuts)
    count = max(1, round(fraction * len(every)))
    chosen = torch.randperm(len(every), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return CutSet.from_cuts(every[i] for i in chosen.tolist())


def checkpoint_bytes(model: nn.Module) -> int:
    """Bytes of the tensors a run's checkpoint keeps of `model` (its trained state: head, layer weights and
    what the tuning strategy trains of the upstream), the size that ships per task."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))


def _evaluate(parts: TaskParts, model: nn.Module, batches) -> dict[str, float]:  # noqa: ANN001
    """The task's metrics over a split, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return {k: float(v) for k, v in parts.evaluate(model, batches).items()}
    finally:
        model.train(was_training)


def optimizer_groups(model: DownstreamModel, cfg: Any) -> list[dict[str, Any]] | None:
    """The head at the task's lr; the upstream's trainable parameters as the tuning strategy groups them (the
    whole upstream at `upstream_lr` for `full`); the learned layer weights at `layer_weights_lr` when set
    (short runs need a larger step for them to move from uniform) without weight decay. None when nothing
    differs: the training loop's default groups."""
    encoder = model.encoder
    special: list[tuple[list[nn.Parameter], dict[str, float]]] = []
    for group in encoder.tuning.parameter_groups(encoder.upstream, cfg):
        options = {k: v for k, v in group.items() if k != "params"}
        special.append((list(group["params"]), options))
    weights = encoder.featurizer.weights
    if cfg.layer_weights_lr is not None and weights is not None:
        special.append(([weights], {"lr": cfg.layer_weights_lr, "weight_decay": 0.0}))
    if not special:
        return None
    taken = {id(p) for params, _ in special for p in params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return [{"params": rest}] + [{"params": params, **options} for params, options in special]


def run_one(spec: TaskSpec, cfg: Any, choice: UpstreamChoice, source: FeatureSource, corpus_dir: Path,
            run_dir: Path, tuning: TuningStrategy = FROZEN, evaluate_test: bool = True,
            test_conditions: Sequence[Condition] = (),
            train_conditions: Sequence[Condition] = ()) -> dict[str, Any]:
    """Train one head (resuming if interrupted), select on dev, test once if asked; write results.json.

    With `test_conditions`, the chosen checkpoint is also tested under each distortion (`test_by_condition`,
    keyed by the spec as written; `clean` is the plain test result, from the cache when there is one). With
    `train_conditions`, each training cut's audio is distorted by one of them, drawn per (seed, epoch, cut),
    and training runs live; dev (selection) stays clean."""
    results_path = run_dir / "results.json"
    if results_path.is_file():
        done = json.loads(results_path.read_text())
        if (done.get("test") is not None and not untested_conditions(done, test_conditions)) \
                or not evaluate_test:
            return done
    started = time.time()
    cfg = replace(cfg, train=replace(cfg.train, metric=spec.metric,
                                     metric_mode="max" if spec.higher_is_better else "min"))
    prepare_run_dir(run_dir, cfg)
    seed_everything(cfg.train.seed)
    parts = spec.build(cfg, corpus_dir, source)
    if parts.save_files is not None and is_main_process():
        parts.save_files(run_dir)
    if cfg.train_fraction != 1.0:
        parts = replace(parts, train_cuts=training_share(parts.train_cuts, cfg.train_fraction, cfg.train.seed))
    normalizer: CorpusNormalizer | None = None
    if choice.corpus_norm:
        normalizer = source.corpus_normalizer(parts.train_cuts)
    upstream_params = _count(source.upstream.parameters())  # before a strategy inserts modules into it
    encoder = source.encoder(tuning, cfg.layers, normalizer)
    tuned_params = _count(p for p in encoder.upstream.parameters() if p.requires_grad)
    model = DownstreamModel(encoder, parts.head)
    # The learning rate the strategy trains the upstream's parameters at, where it sets its own (full).
    upstream_lr = next((g["lr"] for g in tuning.parameter_groups(encoder.upstream, cfg) if "lr" in g), None)

    param_groups = optimizer_groups(model, cfg)
    live = not tuning.caches_features
    train_batches = source.batches(parts.train_cuts, cfg.max_duration, shuffle=True, seed=cfg.train.seed,
                                   live=live, mixture=train_conditions,
                                   others=condition_others(parts.train_cuts) if train_conditions else None)
    dev_batches = source.batches(parts.dev_cuts, cfg.max_duration, shuffle=False, live=live)

    device = resolve_device(cfg.train.device)
    state = TrainState()  # a task that trains nothing (QbE) is only evaluated
    if spec.trains:
        state = train(model, train_batches, parts.loss_fn, cfg.train, run_dir, param_groups=param_groups,
                      evaluate=lambda m: _evaluate(parts, m, _on(device, dev_batches(0))))
    if not is_main_process():
        return {}
    if spec.trains:
        load_checkpoint(run_dir / "checkpoints" / "best.pt", model)
    model.to(device)
    dev = _evaluate(parts, model, _on(device, dev_batches(0)))
    test = None
    by_condition: dict[str, dict[str, float]] | None = None
    condition_splits: dict[str, dict[str, Any]] = {}
    if evaluate_test:
        # The only place the test split is read: after training, with the checkpoint chosen on dev.
        test_cuts = parts.load_test()
        test_batches = source.batches(test_cuts, cfg.max_duration, shuffle=False, live=live)
        test = _evaluate(parts, model, _on(device, test_batches(0)))
        if test_conditions:
            by_condition, condition_splits = test_under_conditions(
                parts, model, source, test_cuts, cfg.max_duration, device, test_conditions, test,
                load_split=lambda split: load_cuts(corpus_dir, cfg.subset, split), live=live)
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results = {
        "task": spec.name, "upstream": choice.label, "metric": spec.metric,
        "higher_is_better": spec.higher_is_better, "lr": cfg.train.lr, "tuning": tuning.name,
        "dev": dev, "test": test, "best_step": state.best_step, "steps": state.step,
        "layer_weights": encoder.layer_weights(),
        "upstream_lr": upstream_lr,
        "params": {"upstream": upstream_params,
                   "trainable": _count(p for p in model.parameters() if p.requires_grad),
                   "tuned": tuned_params,  # the upstream's own trained parameters (inserted ones included)
                   "checkpoint_bytes": checkpoint_bytes(model)},
        "train_cuts": len(parts.train_cuts),
        "wall_time_s": round(previous.get("wall_time_s", 0.0) + time.time() - started, 2),
    }
    if parts.info:  # only where the task has some: other results.json files are as before
        results["task_info"] = parts.info
    if by_condition is not None:
        results["test_by_condition"] = by_condition
    if condition_splits:  # only with domain conditions: which split each was tested on, and its size
        results["condition_splits"] = condition_splits
    if train_conditions:  # only when given: a clean run's results.json is as before
        results["train_conditions"] = [str(c) for c in train_conditions]
    write_results(run_dir, results)
    return results


def untested_conditions(results: dict[str, Any], conditions: Sequence[Condition]) -> list[str]:
    """The specs of `conditions` that a finished results.json was not tested under."""
    tested = results.get("test_by_condition") or {}
    return [str(c) for c in conditions if str(c) not in tested]


def test_under_conditions(parts: TaskParts, model: nn.Module, source: FeatureSource, test_cuts: CutSet,
                          max_duration: float, device: torch.device, conditions: Sequence[Condition],
                          clean: dict[str, float], load_split: Callable[[str], CutSet] | None = None,
                          live: bool = False
                          ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Spec → test metrics of the trained model under each condition, and spec → {split, cuts} of the
    `domain` conditions.

    A distortion is computed live on the test split's distorted audio, never through the clean feature cache;
    `clean` reuses the plain test metrics; a `domain` condition evaluates the split it names
    (`load_split(condition.test_split)`, e.g. `test_fast` of the task's subset) as the test split is
    evaluated (cached unless `live`)."""
    others = condition_others(test_cuts)
    metrics, splits = {}, {}
    for condition in conditions:
        if condition.is_clean:
            metrics[str(condition)] = dict(clean)
            continue
        log.info("test condition %s", condition)
        if condition.kind == "domain":
            if load_split is None:
                raise ConfigError(f"test condition {condition}: this run cannot load other test splits")
            cuts = load_split(condition.test_split)
            batches = source.batches(cuts, max_duration, shuffle=False, live=live)
            splits[str(condition)] = {"split": condition.test_split, "cuts": len(cuts)}
        else:
            batches = source.batches(test_cuts, max_duration, shuffle=False, condition=condition,
                                     others=others)
        metrics[str(condition)] = _evaluate(parts, model, _on(device, batches(0)))
    return metrics, splits


def _on(device: torch.device, batches):  # noqa: ANN001, ANN202 - iterable of FeatureBatch
    """Move each batch to `device` as it is produced."""
    from speechrep.train import to_device

    for batch in batches:
        yield to_device(batch, device)


# ------------------------------------------------------------------------------------------------ one pair

def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def run_pair(task: str, choice: UpstreamChoice, source: FeatureSource, corpus_dir: Path, pair_dir: Path, *,
             tuning: TuningStrategy = FROZEN, lr_sweep: Sequence[float] | None = None,
             preset: str | None = None, overrides: Sequence[str] = (),
             weights: str | None = None, test_conditions: Sequence[Condition] = (),
             train_conditions: Sequence[Condition] = ()) -> dict[str, Any]:
    """One (upstream, task): LR sweep × sub-runs, selection on dev, test once; the pair's results.json.

    The pair's folder is held by one run at a time (a second gets a one-line OutputError naming the holder),
    so benchmark runs of different upstreams or tasks can share an --out. `weights` (`upstream_identity`) is
    recorded in pair_dir: a finished or half-trained pair made with other weights of the same upstream name
    is an OutputError, never a stale row.
    """
    settings = None if weights is None else {"upstream_weights": weights}
    with OutputFolder(pair_dir, "speechrep benchmark", settings):
        return _run_pair(task, choice, source, corpus_dir, pair_dir, tuning, lr_sweep, preset, overrides,
                         weights, test_conditions, train_conditions)


def _run_pair(task: str, choice: UpstreamChoice, source: FeatureSource, corpus_dir: Path, pair_dir: Path,
              tuning: TuningStrategy, lr_sweep: Sequence[float] | None, preset: str | None,
              overrides: Sequence[str], weights: str | None,
              test_conditions: Sequence[Condition] = (),
              train_conditions: Sequence[Condition] = ()) -> dict[str, Any]:
    done = pair_dir / "results.json"
    if done.is_file():
        finished = json.loads(done.read_text())
        missing = untested_conditions(finished, test_conditions)
        if not missing:
            log.info("%s: done, skipping", done)
            return finished
        # Test conditions never change training: the finished checkpoint is tested under the new ones.
        log.info("%s: done; testing its checkpoint under %s", done, ", ".join(missing))
    spec = get_task(task)
    if spec.frame_level:  # a sequence-compressed upstream's segments, repeated onto its frame grid
        source = source.frame_grid_view()
    base_cfg = load_task_config(spec, preset, overrides)
    lrs = list(lr_sweep) if lr_sweep else [base_cfg.train.lr]
    sub_cfgs = spec.sub_runs(base_cfg) if spec.sub_runs else {"": base_cfg}

    def run_dirs(lr: float) -> dict[str, tuple[Any, Path]]:
        lr_dir = pair_dir / f"lr{lr:g}" if lr_sweep else pair_dir
        return {name: (replace(c, train=replace(c.train, lr=lr)), lr_dir / name if name else lr_dir)
                for name, c in sub_cfgs.items()}

    def one_source() -> FeatureSource:
        # A strategy that trains (or inserts modules into) the upstream changes it: every run starts afresh.
        if tuning.caches_features:
            return source
        return FeatureSource(choice.label, load_upstream_module(choice), cache_root=None,
                             device=source.device, fingerprint=source.fingerprint,  # the same weights
                             boundaries=source.boundaries, frame_grid=source.sequence.grid is not None)

    dev_by_lr: dict[float, dict[str, float]] = {}
    wall_times: dict[Path, float] = {}  # per run directory, summed into the pair's wall time
    if len(lrs) > 1:  # with one LR there is nothing to select: train and test in one go below
        for lr in lrs:
            runs = [run_one(spec, c, choice, one_source(), corpus_dir, d, tuning, evaluate_test=False,
                            train_conditions=train_conditions)
                    for c, d in run_dirs(lr).values()]
            dirs = [d for _, d in run_dirs(lr).values()]
            wall_times.update({d: r.get("wall_time_s", 0.0) for d, r in zip(dirs, runs)})
            if is_main_process():
                dev_by_lr[lr] = _mean_metrics([r["dev"] for r in runs])
        if not is_main_process():
            return {}  # under torchrun the other ranks only train; rank 0 selects and tests
    sign = 1.0 if spec.higher_is_better else -1.0
    best_lr = max(lrs, key=lambda lr: sign * dev_by_lr[lr][spec.metric]) if len(lrs) > 1 else lrs[0]
    finals = {name: run_one(spec, c, choice, one_source(), corpus_dir, d, tuning, evaluate_test=True,
                            test_conditions=test_conditions, train_conditions=train_conditions)
              for name, (c, d) in run_dirs(best_lr).items()}
    rows = list(finals.values())
    if not is_main_process():
        return {}
    wall_times.update({d: r["wall_time_s"] for (_, d), r in zip(run_dirs(best_lr).values(), rows)})
    dev_by_lr[best_lr] = _mean_metrics([r["dev"] for r in rows])
    results = {
        "task": task, "upstream": choice.label, "metric": spec.metric,
        "higher_is_better": spec.higher_is_better,
        "best_value": spec.best_value, "percent": spec.shown_as_percent, "lr": best_lr, "tuning": tuning.name,
        "preset": preset,
        "upstream_lr": rows[0].get("upstream_lr"),
        "upstream_weights": weights,
        "dev": _mean_metrics([r["dev"] for r in rows]), "test": _mean_metrics([r["test"] for r in rows]),
        "dev_by_lr": {f"{lr:g}": m for lr, m in dev_by_lr.items()},
        "sub_runs": {name or "main": {k: r[k] for k in ("dev", "test", "layer_weights", "best_step", "steps")}
                     for name, r in finals.items()},
        "layer_weights": [sum(ws) / len(rows) for ws in zip(*(r["layer_weights"] for r in rows))],
        "params": rows[0]["params"],
        "train_cuts": rows[0].get("train_cuts"),
        "wall_time_s": round(sum(wall_times.values()), 2),  # every run of the pair, resumed ones included
    }
    if rows[0].get("task_info"):
        results["task_info"] = rows[0]["task_info"]
    if test_conditions:  # each condition's mean over the sub-runs, like `test`
        results["test_by_condition"] = {str(c): _mean_metrics([r["test_by_condition"][str(c)] for r in rows])
                                        for c in test_conditions}
    if rows[0].get("condition_splits"):  # the same split for every sub-run (ER's folds test all of it)
        results["condition_splits"] = rows[0]["condition_splits"]
    if train_conditions:
        results["train_conditions"] = [str(c) for c in train_conditions]
    if not all(math.isfinite(v) for v in results["test"].values()):
        log.warning("%s/%s: non-finite test metrics %s", choice.label, task, results["test"])
    write_results(pair_dir, results)
    return results


# ------------------------------------------------------------------------------------------------ the suite

def feature_stores(folders: Sequence[Path], tuning: Any) -> dict[str, Path]:
    """Weights fingerprint → folder of each `--features` store (one-line ConfigErrors for unusable ones)."""
    if folders and not tuning.caches_features:
        raise ConfigError(f"--features: tuning {tuning.name!r} changes the upstream, so it cannot use stored features")
    stores: dict[str, Path] = {}
    for folder in folders:
        fingerprint = FeatureStore.open(folder).settings["fingerprint"]
        if fingerprint in stores:
            raise ConfigError(f"--features {folder}: holds the same upstream as {stores[fingerprint]}")
        stores[fingerprint] = Path(folder)
    return stores


def save_benchmark_config(cfg: BenchmarkConfig, path: Path) -> None:
    """OUT/config.yaml: the config without `overwrite` (an action), and without `test_conditions` or
    `train_conditions` when there are none (so a run without them writes the same file as before the fields
    existed)."""
    data = config_to_dict(replace(cfg, overwrite=False))
    for key in ("test_conditions", "train_conditions"):
        if not getattr(cfg, key):
            data.pop(key)
    save_config(data, path)


def check_training_unchanged(cfg: BenchmarkConfig) -> None:
    """An --out whose heads were trained clean is not resumed with `train_conditions` (its rows would mix
    clean and distorted training). The settings record accepts a key it lacks (a newer speechrep resuming an
    older folder), so this case is checked here; the other way round the record itself refuses."""
    out_dir = Path(cfg.out)
    record = out_dir / SETTINGS_NAME
    if not cfg.train_conditions or cfg.overwrite or not record.is_file():
        return
    try:
        recorded = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # check_settings reports it
    trained = [p.name for p in out_dir.iterdir() if p.is_dir() and p.name != "features"]
    if "train_conditions" not in recorded and trained:
        raise OutputError(f"{out_dir}: made with other settings (train_conditions: none -> "
                          f"{','.join(cfg.train_conditions)}; heads of {', '.join(sorted(trained))} were "
                          "trained on clean audio); use --overwrite to start over or choose another output "
                          "folder")


def check_test_splits(specs: Sequence[TaskSpec], cfg: BenchmarkConfig, corpus_dir: Path,
                      conditions: Sequence[Condition]) -> None:
    """One-line ConfigErrors, before anything trains, for `domain` test conditions a task cannot be tested
    under: a task whose test reads files of its own (trials, truth), or a split the corpus lacks (naming the
    `speechrep synth --domains` command that makes it)."""
    from speechrep.data.shar import has_split, is_shar_dir

    domains = [c for c in conditions if c.kind == "domain"]
    for spec in specs if domains else ():
        if not spec.other_test_splits:
            raise ConfigError(f"--test-conditions {domains[0]}: task {spec.name} is tested with files of its "
                              "own beside the test split (trials, truth), so it cannot be tested on another "
                              "split")
        subset = load_task_config(spec, cfg.preset, cfg.overrides).subset
        for condition in domains:
            split = condition.test_split
            found = (has_split(corpus_dir, subset, split) if is_shar_dir(corpus_dir)
                     else (corpus_dir / subset / f"{split}.jsonl.gz").is_file())
            if not found:
                raise ConfigError(f"--test-conditions {condition}: task {spec.name} has no split {split} in "
                                  f"{corpus_dir / subset}; {_domain_hint(corpus_dir, subset, condition)}")


def _domain_hint(corpus_dir: Path, subset: str, condition: Condition) -> str:
    """How to make a missing domain split: the synth command, or which subsets and names synth knows."""
    from speechrep.data.synth.domains import DOMAIN_SUBSETS

    name = str(condition.param("name"))
    if name not in DOMAIN_SUBSETS:
        return f"`speechrep synth --domains` makes {', '.join(DOMAIN_SUBSETS)}"
    if subset not in DOMAIN_SUBSETS[name]:
        return f"`speechrep synth --domains {name}` makes it for {', '.join(DOMAIN_SUBSETS[name])} only"
    try:  # the corpus's own preset and seed, as `speechrep synth` recorded them
        settings = json.loads((corpus_dir / SETTINGS_NAME).read_text())
        flags = f" --preset {settings['preset']} --seed {settings['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        flags = " --preset PRESET --seed SEED"
    return f"make it with `speechrep synth --out {corpus_dir}{flags} --subsets {subset} --domains {name}`"


def benchmark(cfg: BenchmarkConfig,
              summarise: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Run every (upstream, task) pair of `cfg` into cfg.out (skipping finished ones); returns their rows.

    `summarise(rows)` (e.g. writing the leaderboard into cfg.out) runs on rank 0 while the folder is still held.

    Everything a user can get wrong (tasks, overrides, presets, tuning, corpus, upstream names) fails before
    the output folder is touched. Under torchrun every rank trains on its share of each batch; rank 0 alone
    evaluates, selects and returns.
    """
    cfg.check()
    tuning = get_tuning(cfg.tuning)
    corpus_dir, out_dir = Path(cfg.corpus), Path(cfg.out)
    if not corpus_dir.is_dir():
        raise ConfigError(f"--corpus {corpus_dir}: no such folder (make one with `speechrep synth`)")
    specs = [get_task(task) for task in cfg.tasks]  # unknown names fail before any training starts
    check_overrides(cfg.tasks, cfg.overrides)
    for spec in specs:  # every preset and override is valid for every task before any of them trains
        load_task_config(spec, cfg.preset, cfg.overrides)
    choices = [parse_upstream(u, cfg.random_init) for u in cfg.upstreams]
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--upstream: two upstreams share a name: {labels}")
    stores = feature_stores(cfg.features, tuning)
    conditions = parse_conditions(cfg.test_conditions) if cfg.test_conditions else []
    train_conditions = (parse_conditions(cfg.train_conditions, "train conditions") if cfg.train_conditions
                        else [])
    check_training_unchanged(cfg)
    check_test_splits(specs, cfg, corpus_dir, conditions)
    # Shared: runs of other upstreams or tasks may write this --out at the same time (the demo's lanes do);
    # each pair folder is held by one run.
    with OutputFolder(out_dir, "speechrep benchmark", cfg.settings(), cfg.overwrite, shared=True), \
            disk_errors(out_dir):
        if is_main_process():
            save_benchmark_config(cfg, out_dir / "config.yaml")
        rows = []
        for choice in choices:
            upstream = load_upstream_module(choice)
            weights = upstream_identity(choice, upstream)
            device = resolve_device("auto")
            cache_root = out_dir / "features" if cfg.feature_cache and tuning.caches_features else None
            source = FeatureSource(choice.label, upstream, cache_root=cache_root, device=device,
                                   fingerprint=weights, boundaries=cfg.boundaries or None)
            store = stores.pop(weights, None) if stores else None
            if store is not None:
                log.info("benchmark: %s reads its features from %s", choice.label, store)
                source.cache = FeatureCache.from_store(store, upstream)
            for task in cfg.tasks:
                log.info("benchmark: %s on %s", choice.label, task)
                row = run_pair(task, choice, source, corpus_dir, out_dir / choice.label / task, tuning=tuning,
                               lr_sweep=cfg.lr_sweep, preset=cfg.preset, overrides=cfg.overrides,
                               weights=weights, test_conditions=conditions,
                               train_conditions=train_conditions)
                if row:  # empty on ranks other than 0 under torchrun
                    rows.append(row)
        if summarise is not None and is_main_process():
            summarise(rows)
    for fingerprint, folder in stores.items():
        log.warning("--features %s: no upstream of this run has its weights (fingerprint %s); not used",
                    folder, fingerprint)
    return rows

"""A compression series: one method applied at decreasing sizes, each step exported as an upstream.

    report = compress_series("heads", "runs/mh/upstream", "out/heads", data="corpus", preset="demo")

Methods (`keep` is the fraction of the original model each step keeps):
- `heads`: attention heads, ranked across layers by the L1 norm of their weights (`importance: l1`) or of
  the gradients of the retraining loss (`importance: gradient`), removed physically;
- `ffn`: FFN units of every layer by weight magnitude, removed physically (fc1/fc2 singular values reported);
- `prune`: unstructured global magnitude pruning of the transformer's linear weights to density `keep`
  (zeros in dense matrices; `sparse.py`);
- `skip`: skip-ahead, the attention of the most diagonal layers replaced by the identity (`skip.py`);
- `distill`: shallow students of round(keep · layers) layers trained with the DistilHuBERT objective.

Steps run from the largest keep down. The pruning methods are iterative: each step prunes the previous
(retrained) step further, then trains `steps` steps to recover the unpruned model's hidden states
(`retrain.py`); `steps: 0` is one-shot pruning without training. Distilled students all start from the
original. Every step is exported to OUT/keep_<f>/ (provenance: method, keep, original), its training run lives
in OUT/train/keep_<f>/ (a killed run resumes there: run the same command again) and OUT/compress.json holds
the layer sizes, parameters and MACs per audio second of the original and of every step.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from torch import nn

from speechrep.compress import sparse
from speechrep.compress.distill import distillation_objective, shallow_student, student_layers
from speechrep.compress.retrain import SelfDistillation, gradient_head_importance, retrain
from speechrep.compress.structured import (
    check_keep,
    check_prunable,
    layer_sizes,
    prune_ffn,
    prune_heads,
    step_report,
)
from speechrep.config import CONFIG_ROOT, config_to_dict, load_config
from speechrep.data.batching import audio_batches
from speechrep.errors import ConfigError
from speechrep.pretrain.common import PretrainData, load_unlabeled
from speechrep.ranks import rank_and_world
from speechrep.storage import OutputFolder, atomic_write_json
from speechrep.train import TrainConfig
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.extract import load_upstream_flag

log = logging.getLogger(__name__)

METHODS = ("heads", "ffn", "prune", "skip", "distill")
CONFIG_DIR = CONFIG_ROOT / "compress"
NOTES = {
    "prune": "unstructured sparsity: the weights are zeros in dense matrices, which dense kernels multiply "
             "like any other weight (no speed-up); sparse_macs_per_second counts what zeros would save",
}


@dataclass
class Config:
    """How a series is compressed and how each step is retrained (configs/compress/*.yaml)."""

    keep: list[float] = field(default_factory=lambda: [0.75, 0.5, 0.25])  # fractions of the original kept
    steps: int = 0                      # training steps after each pruning step; 0: one-shot (no data needed)
    importance: Literal["l1", "gradient"] = "l1"  # heads: rank by |weights|₁ or by |gradients|₁
    importance_batches: int = 8         # batches summed by the gradient importance and the diagonality
    importance_mask_prob: float = 0.3   # share of frames masked in the student's input for the gradients
    band: int = 1                       # skip: attention within |i − j| <= band counts as diagonal
    cosine_weight: float = 1.0          # λ of −log σ(cos) in the distillation losses
    target_layers: list[int] | None = None  # distill: teacher states the student predicts; None: 3 spread
    data: PretrainData = field(default_factory=lambda: PretrainData(max_duration=40.0, max_utterance=10.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=10, eval_every=100,
                                                                   log_every=10))

    def __post_init__(self) -> None:
        if not self.keep:
            raise ConfigError("key 'keep': give at least one fraction")
        for keep in self.keep:
            check_keep(keep)
        if self.steps < 0:
            raise ConfigError(f"key 'steps': must be >= 0, got {self.steps}")
        if not 0 < self.importance_mask_prob < 1:
            raise ConfigError(f"key 'importance_mask_prob': must be in (0, 1), got "
                              f"{self.importance_mask_prob}")
        if self.importance_batches < 1 or self.band < 0:
            raise ConfigError("keys 'importance_batches' (>= 1) and 'band' (>= 0) out of range")


def compress_presets() -> list[str]:
    """The presets of `speechrep compress --preset` (configs/compress/<name>.yaml beside compress.yaml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "compress")


def compress_config(preset: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """configs/compress/compress.yaml ← configs/compress/<preset>.yaml ← key=value overrides."""
    paths = [CONFIG_DIR / "compress.yaml"]
    if preset is not None:
        paths.append(CONFIG_DIR / f"{preset}.yaml")
        if not paths[-1].is_file():
            raise ConfigError(f"--preset {preset}: no such compression preset (presets: "
                              f"{', '.join(compress_presets())})")
    return load_config(Config, paths, overrides)


def _needs_data(method: str, cfg: Config) -> str | None:
    """Why `method` with `cfg` reads audio, or None (one-shot pruning by weight magnitude)."""
    if method == "distill" or cfg.steps:
        return "training after each step reads audio"
    if method == "skip":
        return "skip-ahead measures the attention diagonality on audio"
    if method == "heads" and cfg.importance == "gradient":
        return "gradient importance reads audio"
    return None


def _sample_batches(data: str | Path, cfg: Config) -> list[Any]:
    """The first `importance_batches` batches of the training audio, in a fixed order."""
    train_cuts, _ = load_unlabeled(data, cfg.data)
    batches = []
    for batch in audio_batches(train_cuts, cfg.data.max_duration, shuffle=False)(0):
        batches.append(batch)
        if len(batches) == cfg.importance_batches:
            break
    return batches


def _prune_step(method: str, current: nn.Module, original: nn.Module, keep: float, cfg: Config,
                batches: list[Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The next step of an iterative method: `current` pruned to `keep` of the original; (model, details)."""
    if method == "heads":
        total = sum(layer_sizes(original)["heads"])
        scores = gradient_head_importance(current, original, batches, cfg.importance_mask_prob) \
            if cfg.importance == "gradient" else None
        return prune_heads(current, 1.0, scores, count=round(keep * total)), {"importance": cfg.importance}
    if method == "ffn":
        counts = [round(keep * units) for units in layer_sizes(original)["ffn"]]
        return prune_ffn(current, 1.0, counts), {}
    if method == "prune":
        model = copy.deepcopy(current)
        masks = sparse.magnitude_masks(model, keep)
        sparse.apply_masks(model, masks)
        overlap = sparse.mask_overlap(masks, sparse.magnitude_masks(original, keep))
        return model, {"mask_overlap_one_shot": overlap,
                       "mask_kept_from_previous": _kept_share(sparse.masks_of(current), masks)}
    from speechrep.compress.skip import attention_diagonality, skip_attention

    diagonality = attention_diagonality(current, [(b.wavs, b.wav_lens) for b in batches], band=cfg.band)
    return skip_attention(current, keep, diagonality), {"diagonality": diagonality}


def _kept_share(previous: sparse.Masks, masks: sparse.Masks) -> float:
    """The share of the weights the previous step kept that this step keeps too."""
    kept = sum(int(m.sum()) for m in previous.values())
    return sum(int((previous[k] & masks[k]).sum()) for k in masks) / kept if kept else 1.0


def _report(model: nn.Module, method: str) -> dict[str, Any]:
    report = step_report(model, method)
    if method == "prune":
        report.update(sparse.sparsity_report(model, sparse.masks_of(model), report["params"],
                                             report["macs_per_second"], report["frames_per_second"]))
    if method == "skip":
        from speechrep.compress.skip import skipped_layers

        report["skipped"] = skipped_layers(model)
    return report


def compress_series(method: str, upstream: str, out: str | Path, data: str | Path | None = None,
                    cfg: Config | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Compress `upstream` (a name or a model path) by `method` at every `cfg.keep` (module doc); returns and
    writes OUT/compress.json."""
    if method not in METHODS:
        raise ConfigError(f"--method {method}: unknown; choose one of {', '.join(METHODS)}")
    cfg = cfg or Config()
    out = Path(out)
    original = load_upstream_flag(upstream, flag="--upstream").eval()
    check_prunable(original, "heads" if method == "heads" else "ffn")
    why = _needs_data(method, cfg)
    if method == "distill" and not cfg.steps:
        raise ConfigError("--method distill: set steps > 0 (the student must be trained)")
    if why and data is None:
        raise ConfigError(f"--method {method}: {why}; give --data CORPUS")
    if rank_and_world()[1] > 1:
        raise ConfigError("speechrep compress runs in one process (each step is small); start it without "
                          "torchrun")
    settings = {"method": method, "upstream": upstream, "config": config_to_dict(cfg)}
    with OutputFolder(out, "compress", settings, overwrite):
        reads_batches = method == "skip" or (method == "heads" and cfg.importance == "gradient")
        batches = _sample_batches(data, cfg) if reads_batches else []
        current, steps, students = original, [], set()
        for keep in sorted(set(cfg.keep), reverse=True):
            folder = out / f"keep_{keep:g}"
            if method == "distill":  # keeps that round to a student already trained are left out
                layers = student_layers(original, keep)
                if layers in students:
                    log.info("keep %g: a %d-layer student is already in the series; skipped", keep, layers)
                    continue
                students.add(layers)
            details: dict[str, Any] = {}
            if (folder / "config.json").is_file():  # exports are atomic: a config means a complete step
                model = load_upstream(folder)
                details = json.loads((folder / "config.json").read_text())["provenance"].get("details", {})
            else:
                if method == "distill":
                    model = shallow_student(original, layers)
                    objective = distillation_objective(model, original, cfg)
                else:
                    model, details = _prune_step(method, current, original, keep, cfg, batches)
                    objective = SelfDistillation(model, original, cfg.cosine_weight)
                if cfg.steps:
                    masks = sparse.masks_of(model) if method == "prune" else None
                    run_dir = out / "train" / folder.name
                    retrain(objective, cfg, data, run_dir, masks)
                    details["train"] = json.loads((run_dir / "results.json").read_text())
                    # the loop trained on its device (a GPU when there is one); pruning and counting run on
                    # the CPU, and a resumed series starts from CPU copies too
                    model.cpu()
                    original.cpu()
                note = {"note": NOTES[method]} if method in NOTES else {}
                export_upstream(model.eval(), folder, {"compress": method, "keep": keep, "upstream": upstream,
                                                       "steps": cfg.steps, "details": details, **note})
            steps.append({"keep": keep, "folder": folder.name, **details, **_report(model, method)})
            if method != "distill":
                current = model
        report = {"method": method, "upstream": upstream, "steps_per_stage": cfg.steps,
                  "config": config_to_dict(cfg), "original": _report(original, method), "steps": steps,
                  **({"note": NOTES[method]} if method in NOTES else {})}
        atomic_write_json(out / "compress.json", report)
    return report

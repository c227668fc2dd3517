"""A LoRA-tuned benchmark run's upstream, merged into plain weights and exported (`speechrep merge-lora`).

    merged = merged_lora_upstream(load_upstream("hubert_base"), Path("bench/hubert_base/ks/checkpoints/best.pt"))
    export_upstream(merged, "hubert_base_ks_lora", provenance={...})   # what `speechrep merge-lora` does

A run's checkpoint holds only what trained (the LoRA factors, the head, the layer weights) and the fingerprint
of the base upstream's weights; the base upstream must be the one it was trained on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from speechrep.errors import CheckpointError, ConfigError
from speechrep.train import read_checkpoint
from speechrep.tuning import get_tuning
from speechrep.tuning.lora import merged_upstream
from speechrep.upstream.feature_store import upstream_fingerprint

PREFIX = "encoder.upstream."  # where a DownstreamModel's state dict keeps the tuned upstream's keys


def tuned_state(checkpoint: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(the encoder's record of base upstream and tuning, the tuned upstream's saved keys) of a run checkpoint."""
    state = checkpoint.get("model", checkpoint)
    record = state.get("encoder._extra_state")
    if not isinstance(record, dict) or "base_upstream" not in record:
        raise CheckpointError("not a benchmark run checkpoint with a recorded base upstream "
                              "(written by `speechrep benchmark --tuning ...`)")
    return record, {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


def merged_lora_upstream(upstream: nn.Module, checkpoint_path: Path) -> nn.Module:
    """`upstream` with the LoRA update a benchmark run trained on it folded into its weights (a plain upstream).

    CheckpointError if the run was trained on other weights or its checkpoint lacks LoRA factors; ConfigError if
    it was tuned with another strategy (only LoRA's update can be folded into the upstream's own weights)."""
    record, saved = tuned_state(read_checkpoint(checkpoint_path))
    tuning = str(record.get("tuning", ""))
    if not tuning.startswith("lora"):
        raise ConfigError(f"{checkpoint_path}: tuned with {tuning or 'an unrecorded strategy'}; only a LoRA update "
                          f"merges into the upstream's weights")
    mine = upstream_fingerprint(upstream)
    if record["base_upstream"] != mine:
        raise CheckpointError(f"{checkpoint_path}: trained on upstream weights {record['base_upstream']}; the "
                              f"given upstream has weights {mine}")
    strategy = get_tuning(tuning)
    prepared = strategy.prepare(upstream)
    wanted = set(strategy.checkpoint_keys(prepared))
    if set(saved) != wanted:
        raise CheckpointError(f"{checkpoint_path}: its {len(saved)} tuned keys do not match the {len(wanted)} "
                              f"{tuning} trains on this upstream")
    prepared.load_state_dict(saved, strict=False)
    return merged_upstream(prepared)

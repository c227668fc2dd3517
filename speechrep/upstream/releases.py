"""Published checkpoints that are neither fairseq nor Hugging Face: S3PRL's releases, modified CPC, MelHuBERT.

Each release is a torch pickle, read with the restricted unpickler of `speechrep.upstream.fairseq` (no code
from the file runs); its top-level keys tell the format apart:

- `s3prl_distiller` (DistilHuBERT): `Distiller` state dict, `Config["distiller"]` → distilhubert.
- `s3prl_transformer` (Mockingjay, TERA, Audio ALBERT): `Transformer` state dict, `Config` or
  `Upstream_Config` holding `transformer` → mockingjay.
- `melhubert` (github.com/nervjack2/MelHuBERT): `model`, `Upstream_Config["melhubert"]` → melhubert.
- `s3prl_npc`: `model`, `config["model"]["paras"]` with `n_blocks` → npc.
- `s3prl_apc` (APC; VQ-APC when `paras` has `vq`): `model`, `config["model"]["paras"]` with `num_layers`
  → apc.
- `cpc` (modified CPC): `weights` + `config` holding `hiddenEncoder` (S3PRL / ZeroSpeech 2021 release), or
  `gEncoder` (CPC_audio's own training checkpoint) → cpc.

Anything else with a `model` state dict goes to the fairseq reader as before. The converter of each format
is a `from_s3prl` / `from_release` function in the family's file; it returns the family's config (sizes from
the checkpoint's config, checked against the tensor shapes when loading) and the weights renamed to our keys.
Pre-training heads (postnets, prediction layers, SpecHead, final projections) are dropped; anything a
converter does not recognise is left for `load_weights` to report by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from torch import Tensor

from speechrep.errors import CheckpointError
from speechrep.upstream.fairseq import to_plain

# format → family it loads into
RELEASE_FAMILIES = {
    "s3prl_distiller": "distilhubert",
    "s3prl_transformer": "mockingjay",
    "melhubert": "melhubert",
    "s3prl_apc": "apc",
    "s3prl_npc": "npc",
    "cpc": "cpc",
}


def _is_state(value: Any) -> bool:
    """A non-empty mapping of names to tensors."""
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty dict (configs read leniently, checked by the converters)."""
    return dict(value) if isinstance(value, Mapping) else {}


def detect_release(raw: Any) -> str | None:
    """The release format of a checkpoint's top-level object (see the module table), or None."""
    if not isinstance(raw, Mapping):
        return None
    config = _dict(raw.get("Config"))
    upstream_config = _dict(raw.get("Upstream_Config"))
    if _is_state(raw.get("Distiller")) and "distiller" in config:
        return "s3prl_distiller"
    if _is_state(raw.get("Transformer")) and ("transformer" in config or "transformer" in upstream_config):
        return "s3prl_transformer"
    if _is_state(raw.get("model")) and "melhubert" in upstream_config:
        return "melhubert"
    paras = _dict(_dict(_dict(raw.get("config")).get("model")).get("paras"))
    if _is_state(raw.get("model")) and "n_blocks" in paras:
        return "s3prl_npc"
    if _is_state(raw.get("model")) and "num_layers" in paras:
        return "s3prl_apc"
    if _is_state(raw.get("weights")) and "hiddenEncoder" in _dict(to_plain(raw.get("config"))):
        return "cpc"
    if _is_state(raw.get("gEncoder")):
        return "cpc"
    return None


def _converters() -> dict[str, Callable[[dict[str, Any], str], tuple[Any, dict[str, Tensor]]]]:
    """format → converter (imported here: the family modules import the hub, not the other way round)."""
    from speechrep.upstream import apc, cpc, distilhubert, melhubert, mockingjay, npc

    return {
        "s3prl_distiller": distilhubert.from_s3prl,
        "s3prl_transformer": mockingjay.from_s3prl,
        "melhubert": melhubert.from_release,
        "s3prl_apc": apc.from_s3prl,
        "s3prl_npc": npc.from_s3prl,
        "cpc": cpc.from_release,
    }


def convert_release(raw: Mapping[str, Any], fmt: str, path: Path) -> tuple[str, Any, dict[str, Tensor]]:
    """(family, config, weights in our key layout) of a release checkpoint in format `fmt`.

    Configs (argparse namespaces and the like) are turned into plain data first; weights stay tensors."""
    if fmt not in RELEASE_FAMILIES:
        known = ", ".join(RELEASE_FAMILIES)
        raise CheckpointError(f"{path}: unknown release format {fmt!r} (known: {known})")
    plain = {key: (value if _is_state(value) else to_plain(value)) for key, value in raw.items()}
    config, state = _converters()[fmt](plain, str(path))
    return RELEASE_FAMILIES[fmt], config, state

"""The explicit registries: upstream names and exportable families; no import cycle through them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from speechrep.errors import CheckpointError
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.registry import get_family, list_families, register_family


def test_every_exportable_family_is_registered_explicitly() -> None:
    assert list_families() == ["apc", "best_rq", "byol_a", "cpc", "data2vec", "discrete_bert", "distilhubert",
                               "hubert", "melhubert", "mockingjay", "npc", "wav2vec", "wav2vec2", "wavlm"]
    assert get_family("hubert", "x").__name__ == "HuBERT"


def test_unknown_family_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"^here: unknown upstream family 'nope' \(known: apc, "):
        get_family("nope", "here")
    out = export_upstream(load_upstream("apc_tiny"), tmp_path / "m", {"name": "apc_tiny"})
    meta = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(meta, family="mystery")))
    with pytest.raises(CheckpointError, match="unknown upstream family 'mystery'") as info:
        load_upstream(out)
    assert "\n" not in str(info.value)


def test_register_family_requires_family_and_dataclass_config() -> None:
    class NotAFamily(nn.Module):
        family = "x"

    with pytest.raises(TypeError, match="dataclass `config_class`"):
        register_family(NotAFamily)


def test_nn_imports_no_higher_package() -> None:
    """speechrep/nn holds reusable modules only: it may import torch and itself, nothing above it."""
    higher = ("speechrep.upstream", "speechrep.pretrain", "speechrep.downstream", "speechrep.train")
    for path in (Path(__file__).parents[1] / "speechrep" / "nn").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(higher), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(higher) for a in node.names), path.name


def test_registry_lookups_work_in_a_fresh_process() -> None:
    code = ("from speechrep.upstream.registry import list_upstreams, list_families; "
            "assert 'hubert_tiny' in list_upstreams() and 'hubert' in list_families()")
    subprocess.run([sys.executable, "-c", code], check=True)

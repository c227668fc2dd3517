"""Imports flow one way: each part of the package imports only the parts docs/architecture.md allows it."""
from __future__ import annotations

import ast
from pathlib import Path

import speechrep

BASE = {"errors", "storage", "config", "ranks", "parts"}  # the bottom layer every part may use
ALLOWED = {
    "errors": set(),
    "storage": {"errors"},
    "config": {"errors", "storage"},
    "ranks": set(),
    "parts": {"errors", "storage", "ranks"},
    "nn": BASE,
    "audio": BASE,
    "data": BASE | {"audio"},
    "upstream": BASE | {"nn", "audio"},
    "hear": BASE | {"upstream", "audio"},
    "train": BASE,
    "pretrain": BASE | {"upstream", "nn", "audio", "data", "train"},
    "tuning": BASE | {"upstream", "nn"},
    "downstream": BASE | {"upstream", "tuning", "nn", "audio", "data", "train"},
    "compress": BASE | {"upstream", "pretrain", "nn", "audio", "data", "train"},
    "analysis": BASE | {"upstream", "downstream", "tuning", "nn", "audio", "data", "train"},
    "apps": BASE | {"upstream", "nn", "audio", "data", "train", "downstream"},  # downstream: vc-eval's PR, ASV
    "bench": BASE | {"upstream", "downstream", "pretrain", "tuning", "compress", "analysis", "apps", "nn", "audio",
                     "data", "train", "hear"},
    "cli": None,  # the command imports whatever it runs
    "__init__": {"errors", "upstream"},
    "__main__": {"cli"},
}


def _imports(path: Path) -> set[str]:
    """The speechrep parts (first component after `speechrep.`) a module imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("speechrep.")}
    return found


def test_every_part_imports_only_what_it_may() -> None:
    root = Path(speechrep.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        part = parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")
        assert part in ALLOWED, f"{part}: a new part of the package; add it to ALLOWED and docs/architecture.md"
        allowed = ALLOWED[part]
        if allowed is None:
            continue
        wrong += [f"{path.relative_to(root)} imports speechrep.{dst}" for dst in _imports(path) - allowed - {part}]
    assert not wrong, "\n".join(wrong)

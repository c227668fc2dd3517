"""The report's synthesis section: copy-synthesis, kNN-VC and VC-task tables and before/after audio players.

Input: `RESULTS_DIR/synthesis/synthesis.json`, written by `python -m speechrep.apps.experiments` (sections
`copy_synthesis`, `knn_vc`, `knn_vc_source`, `vc_task`, and `samples`: {section, title, before, after,
reference} with wave paths relative to that folder). The players are `<audio>` elements whose files stay
beside the page (`synthesis/samples/...` relative to a page in RESULTS_DIR; `copy_samples` puts them beside a
page written elsewhere): the page itself stays one HTML file without embedded audio.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from speechrep.bench.report.tables import esc

FOLDER = "synthesis"
RESULTS = "synthesis.json"


def _number(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _judged(row: Mapping[str, Any]) -> list[str]:
    """MCD, PER (%), accept rates (%) against target and source."""
    return [_number(row.get("mcd_db")), _number(row.get("per"), 100, 1),
            _number(row.get("target_accept"), 100, 0), _number(row.get("source_accept"), 100, 0)]


JUDGED = ["MCD (dB) ↓", "PER (%) ↓", "ASV accept: target (%) ↑", "ASV accept: source (%) ↓"]


def _player(path: str | None, label: str) -> str:
    if not path:
        return ""
    src = esc(f"{FOLDER}/{path}")
    audio = f'<audio controls preload="none" src="{src}"></audio>'
    return f"<figure><figcaption>{esc(label)}</figcaption>{audio}</figure>"


def samples_html(samples: Sequence[Mapping[str, str]]) -> str:
    """One row of players (before, after, reference) per sample."""
    rows = []
    for s in samples:
        players = _player(s.get("before"), "before") + _player(s.get("after"), "after") + \
            _player(s.get("reference"), "target reference")
        rows.append(f'<div class="samples"><p>{esc(s.get("title", ""))}</p>{players}</div>')
    return "\n".join(rows)


def synthesis_body(data: Mapping[str, Any]) -> str:
    """The section's HTML from the contents of synthesis.json."""
    parts = []
    if data.get("copy_synthesis"):
        rows = [[r["system"], *_judged(r)[:3]] for r in data["copy_synthesis"]]
        parts.append("<h3>Copy-synthesis</h3>\n" + _table(["system", *JUDGED[:3]], rows))
    if data.get("knn_vc"):
        rows = [[str(r.get("vocoder")), _number(r.get("seconds"), 1, 0) if r.get("seconds") else "all",
                 str(r.get("k", 4)), str(r.get("lambda", 1.0)), *_judged(r)] for r in data["knn_vc"]]
        source = data.get("knn_vc_source")
        if source:
            rows.append([source["vocoder"], "", "", "", *_judged(source)])
        parts.append("<h3>kNN-VC</h3>\n" + _table(["vocoder (features)", "reference (s)", "k", "λ", *JUDGED],
                                                   rows))
    if data.get("vc_task"):
        rows = [[r["upstream"], _number(r.get("dev_mcd")), _number(r.get("test_mcd"))]
                for r in data["vc_task"]]
        header = ["upstream", "dev MCD (dB)", "test MCD (dB)"]
        parts.append("<h3>VC task (any-to-one)</h3>\n" + _table(header, rows))
    if data.get("samples"):
        parts.append("<h3>Samples</h3>\n" + samples_html(data["samples"]))
    return "\n".join(parts)


def synthesis_section(results_dir: Path) -> str | None:
    """The section body for RESULTS_DIR, or None when it has no synthesis/synthesis.json."""
    path = Path(results_dir) / FOLDER / RESULTS
    if not path.is_file():
        return None
    return synthesis_body(json.loads(path.read_text()))


def copy_samples(results_dir: Path, page_dir: Path) -> None:
    """Put the sample waves beside a page written outside RESULTS_DIR (same relative paths)."""
    source, target = Path(results_dir) / FOLDER / "samples", Path(page_dir) / FOLDER / "samples"
    if source.is_dir() and source.resolve() != target.resolve():
        shutil.copytree(source, target, dirs_exist_ok=True)

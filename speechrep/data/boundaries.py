"""Segment boundaries of utterances, for alignment-guided sequence compression.

A cut's boundaries are the times (seconds from the cut's start) where one segment ends and the next begins:
the starts and ends of the phones of its supervision's `custom["phone_alignment"]` ([phone, start_s, end_s],
relative to the supervision; the synthetic corpus carries them), so pauses are segments of their own. For a
corpus without alignments in its manifests, a boundaries file maps cut ids to times, one JSON object a line:

    {"id": "utt-0001", "boundaries": [0.12, 0.19, 0.31]}

Windows cut out of a longer utterance keep the boundaries that fall inside them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from speechrep.errors import ConfigError, SpeechrepError


def alignment_boundaries(cut: Any) -> list[float] | None:
    """Phone starts and ends inside the cut (seconds from its start), or None without a phone alignment."""
    for sup in getattr(cut, "supervisions", []):
        custom = sup.custom or {}
        if "phone_alignment" not in custom:
            continue
        try:
            times = {float(t) + float(sup.start) for _, start, end in custom["phone_alignment"]
                     for t in (start, end)}
        except (TypeError, ValueError):
            raise SpeechrepError(f"cut {cut.id!r}: custom['phone_alignment'] must be [phone, start_s, end_s] "
                                 "triples") from None
        return sorted(t for t in times if 0.0 < t < float(cut.duration))
    return None


class BoundarySource:
    """Boundaries per cut: from a boundaries file when given, else from the cuts' phone alignments."""

    def __init__(self, path: str | Path | None = None):
        self.path = str(path) if path else None
        self.table: dict[str, list[float]] = {}
        if self.path:
            self.table = read_boundaries(self.path)

    def for_cut(self, cut: Any) -> list[float]:
        """The cut's boundary times; a SpeechrepError names the cut when it has none."""
        if self.path:
            key = cut.id if cut.id in self.table else getattr(cut, "recording_id", None)
            if key not in self.table:
                raise SpeechrepError(f"cut {cut.id!r} has no entry in the boundaries file {self.path}")
            offset = float(getattr(cut, "start", 0.0)) if key != cut.id else 0.0
            return [t - offset for t in self.table[key] if 0.0 < t - offset < float(cut.duration)]
        times = alignment_boundaries(cut)
        if times is None:
            raise SpeechrepError(
                f"cut {cut.id!r} has no custom['phone_alignment'] to take segment boundaries from; "
                "give a boundaries file (one {\"id\": ..., \"boundaries\": [seconds ...]} per line)"
            )
        return times

    def for_cuts(self, cuts: Iterable[Any]) -> list[list[float]]:
        """Boundary times of each cut, in order."""
        return [self.for_cut(cut) for cut in cuts]


def read_boundaries(path: str | Path) -> dict[str, list[float]]:
    """Cut or recording id → sorted boundary times, from a JSON-lines boundaries file."""
    table: dict[str, list[float]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"boundaries file {path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            table[str(row["id"])] = sorted(float(t) for t in row["boundaries"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"boundaries file {path}, line {number}: expected "
                              "{\"id\": ..., \"boundaries\": [seconds ...]}") from None
    return table

"""Shared pieces of the corpus recipes: layout checks, cut building, validation and atomic manifest writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import soundfile as sf
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.qa import validate

from speechrep.errors import AudioError, SpeechrepError
from speechrep.storage import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
# subset -> split -> cuts: every recipe returns this shape and writes OUT/<subset>/<split>.jsonl.gz
Manifests = dict[str, dict[str, CutSet]]
T = TypeVar("T")


class CorpusLayoutError(SpeechrepError, FileNotFoundError):
    """A corpus folder that does not have the published layout (a missing file or folder, a bad line)."""


def require(path: Path, what: str) -> Path:
    """`path` if it exists, else a CorpusLayoutError naming it and what it should be."""
    if not path.exists():
        raise CorpusLayoutError(f"{path}: missing {what}")
    return path


def manifest_path(output_dir: Path, subset: str, split: str) -> Path:
    """Where the manifest of one subset split lives: OUT/<subset>/<split>.jsonl.gz."""
    return output_dir / subset / f"{split}.jsonl.gz"


def read_tsv(path: Path, columns: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) per row of a tab-separated file whose header names at least `columns`.
    No quoting (Common Voice sentences hold quote marks); a CorpusLayoutError names a missing file or column,
    or the line of a row too short to hold them."""
    lines = require(path, what).read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t") if lines else []
    missing = [c for c in columns if c not in header]
    if missing:
        raise CorpusLayoutError(f"{path}: {what} without a {missing[0]!r} column (header: "
                                f"{lines[0] if lines else 'none'!r})")
    needed = 1 + max(header.index(c) for c in columns)
    rows = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < needed:
            raise CorpusLayoutError(f"{path}:{number}: expected {len(header)} tab-separated fields, got "
                                    f"{len(fields)}")
        rows.append((number, dict(zip(header, fields))))
    return rows


def load_if_done(
    output_dir: Path | None, layout: Mapping[str, Iterable[str]], extra_files: Iterable[str] = ()
) -> Manifests | None:
    """The manifests already written for every (subset, split) of `layout`, or None if any of them (or of the
    `extra_files`, relative to `output_dir`) is missing."""
    if output_dir is None:
        return None
    paths = {
        subset: {split: manifest_path(output_dir, subset, split) for split in splits}
        for subset, splits in layout.items()
    }
    needed = [p for splits in paths.values() for p in splits.values()] + [output_dir / f for f in extra_files]
    if not all(p.is_file() for p in needed):
        return None
    logger.info("%s: manifests already prepared, skipping", output_dir)
    return {
        subset: {split: CutSet.from_file(p) for split, p in splits.items()}
        for subset, splits in paths.items()
    }


def recording(path: Path, recording_id: str, what: str = "audio file") -> Recording:
    """A lhotse Recording of an audio file (absolute path, header read once with soundfile); an AudioError
    naming the file when it is missing, not audio or empty."""
    if not path.is_file():
        raise AudioError(f"{path}: missing {what}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for unreadable files
        raise AudioError(f"{path}: cannot read audio ({_one_line(e)})") from e
    if info.frames == 0:
        raise AudioError(f"{path}: empty audio")
    channels = list(range(info.channels))
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="file", channels=channels, source=os.path.abspath(path))],
        sampling_rate=info.samplerate,
        num_samples=info.frames,
        duration=info.frames / info.samplerate,
        channel_ids=channels,
    )


def _one_line(error: Exception) -> str:
    """The first line of an exception's message (library messages can span several)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_audio(path: Path, what: str = "audio file") -> tuple[np.ndarray, int]:
    """(first channel as float32, sample rate) of an audio file; an AudioError when missing or unreadable."""
    if not path.is_file():
        raise AudioError(f"{path}: missing {what}")
    try:
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio ({_one_line(e)})") from e
    return audio[:, 0], sample_rate


class SkipReport:
    """The files a corpus run leaves out (missing or unreadable audio) and why, reported once at the end, so
    that one bad file among thousands costs that file, not the run."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attempt(self, build: Callable[[], T]) -> T | None:
        """`build()`, or None (the problem noted) when it hits an AudioError."""
        try:
            return build()
        except AudioError as e:
            self.problems.append(str(e))
            return None

    def report(self, output_dir: Path | None, corpus: str) -> None:
        """Log the problems and list them all in OUT/skipped_<corpus>.txt."""
        if not self.problems:
            return
        logger.warning("%s: left out %d files, e.g. %s", corpus, len(self.problems), self.problems[0])
        if output_dir is not None:
            atomic_write_text(Path(output_dir) / f"skipped_{corpus}.txt", "\n".join(self.problems) + "\n")


def at_sample_rate(rec: Recording, sample_rate: int = 16000) -> Recording:
    """The recording, resampled on load when it is not already at `sample_rate`."""
    return rec if rec.sampling_rate == sample_rate else rec.resample(sample_rate)


def whole_cut(
    rec: Recording,
    text: str | None = None,
    speaker: str | None = None,
    custom: dict[str, Any] | None = None,
    cut_id: str | None = None,
) -> MonoCut:
    """A cut spanning the whole recording, with one supervision carrying the labels."""
    cut_id = cut_id or rec.id
    sup = SupervisionSegment(
        id=cut_id,
        recording_id=rec.id,
        start=0.0,
        duration=rec.duration,
        channel=0,
        text=text,
        speaker=speaker,
        language="en",
        custom=custom,
    )
    return MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def write_manifests(manifests: Manifests, output_dir: Path | None) -> Manifests:
    """Validate every CutSet, then write each one atomically; a manifest already on disk is kept as is."""
    for subset, splits in manifests.items():
        for split, cuts in splits.items():
            if len(cuts) == 0:
                raise CorpusLayoutError(f"{subset}/{split}: no usable utterances in the corpus folder")
            validate(cuts)
    if output_dir is None:
        return manifests
    for subset, splits in manifests.items():
        for split, cuts in splits.items():
            path = manifest_path(output_dir, subset, split)
            if path.is_file():
                logger.info("%s exists, kept", path)
                continue
            # a killed run never leaves a half-written manifest under the final name
            atomic_write(path, cuts.to_file)
            logger.info("wrote %s (%d cuts)", path, len(cuts))
    return manifests

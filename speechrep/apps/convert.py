"""Voice conversion with kNN-VC over files: one source to one target, or a manifest of pairs.

    converter = VoiceConverter(FrameFeatures("RUN/upstream", layer=2), vocoder)   # vocoder optional
    matching = converter.matching_set(["ref1.wav", "ref2.wav"])                  # built once per target
    wave = converter.convert("source.wav", matching, k=4, lam=1.0)

`convert_pairs` converts the lines `source_path<TAB>target_speaker[<TAB>output_name]` of a pairs file, with
each speaker's reference files listed as `speaker<TAB>path` lines; it writes OUT/<output_name> (default:
`<source stem>_to_<speaker>.wav`) and OUT/conversions.tsv, holds OUT's lock and settings record, skips
outputs already written (a killed run resumes) and reports unreadable sources instead of stopping.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torch import Tensor

from speechrep.apps.features import FrameFeatures
from speechrep.apps.knnvc import MatchingSet, knn_convert
from speechrep.apps.vocoder import Vocoder
from speechrep.audio import load_audio, save_audio
from speechrep.audio import synthesis as spectral
from speechrep.errors import AudioError, ConfigError, SpeechrepError
from speechrep.storage import OutputFolder, atomic_write_text, disk_errors

log = logging.getLogger(__name__)


class VoiceConverter:
    """kNN-VC on one feature extractor; with a vocoder trained on the same features it also makes waves."""

    def __init__(self, extractor: FrameFeatures, vocoder: Vocoder | None = None):
        self.extractor, self.vocoder = extractor, vocoder

    def matching_set(self, references: Sequence[str | Path]) -> MatchingSet:
        """The matching set of a target speaker's reference files."""
        if not references:
            raise ConfigError("kNN-VC: give at least one --reference file of the target speaker")
        return MatchingSet.from_features([self.extractor.file_features(p) for p in references])

    def convert_features(self, source: Tensor, matching: MatchingSet, k: int = 4, lam: float = 1.0) -> Tensor:
        """Converted frames of a source wave (T,)."""
        return knn_convert(self.extractor.features(source), matching, k, lam)

    def convert(self, source: str | Path, matching: MatchingSet, k: int = 4, lam: float = 1.0) -> Tensor:
        """The converted wave (T,) of a source file (needs the vocoder)."""
        if self.vocoder is None:
            raise ConfigError("kNN-VC: a wave needs a vocoder trained on the same features (--vocoder RUN)")
        wav, _ = load_audio(source, spectral.SAMPLE_RATE)
        return self.vocoder.synthesize(self.convert_features(wav, matching, k, lam))[:len(wav)]


def read_table(path: Path, columns: tuple[int, int], what: str) -> list[list[str]]:
    """Tab-separated lines of columns[0] to columns[1] fields (blank lines and # comments skipped)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        if not columns[0] <= len(fields) <= columns[1] or not all(fields):
            raise ConfigError(f"{path}:{number}: expected {columns[0]}-{columns[1]} tab-separated fields "
                              f"({what}), got {line!r}")
        rows.append(fields)
    if not rows:
        raise ConfigError(f"{path}: the {what} file is empty")
    return rows


@dataclass
class ConversionSummary:
    """What a batch conversion did."""

    written: int = 0
    skipped: int = 0  # outputs already there from an earlier run
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.written} converted, {self.skipped} already done"
        if self.failures:
            text += f", {len(self.failures)} failed: {'; '.join(self.failures[:5])}"
        return text


def convert_pairs(converter: VoiceConverter, pairs_file: Path, speakers_file: Path, out: Path, k: int = 4,
                  lam: float = 1.0, overwrite: bool = False, vocoder: str | None = None) -> ConversionSummary:
    """Convert every (source, target speaker) pair of `pairs_file` into `out` (see the module docstring);
    `vocoder` names the vocoder run in OUT's settings record."""
    pairs = read_table(pairs_file, (2, 3), "source<TAB>target_speaker[<TAB>output_name]")
    references: dict[str, list[str]] = {}
    for speaker, path in read_table(speakers_file, (2, 2), "speaker<TAB>reference_path"):
        references.setdefault(speaker, []).append(path)
    unknown = sorted({p[1] for p in pairs} - set(references))
    if unknown:
        raise ConfigError(f"{pairs_file}: target speakers without references in {speakers_file}: "
                          f"{', '.join(unknown[:5])}")
    settings = {"features": converter.extractor.settings(), "k": k, "lambda": lam,
                "vocoder": vocoder, "speakers": references}
    summary = ConversionSummary()
    rows = []
    with OutputFolder(out, "speechrep vc", settings, overwrite), disk_errors(out):
        matching: dict[str, MatchingSet] = {}
        for fields in pairs:
            source, speaker = Path(fields[0]), fields[1]
            name = fields[2] if len(fields) == 3 else f"{source.stem}_to_{speaker}.wav"
            target = out / name
            rows.append(f"{source}\t{speaker}\t{name}")
            if target.is_file():
                summary.skipped += 1
                continue
            try:
                if speaker not in matching:
                    matching[speaker] = converter.matching_set(references[speaker])
                save_audio(target, converter.convert(source, matching[speaker], k, lam).numpy(),
                           spectral.SAMPLE_RATE)
                summary.written += 1
            except AudioError as error:  # one bad file is reported, the rest still converted
                summary.failures.append(str(error))
                log.warning("skipped: %s", error)
        table = "source\ttarget_speaker\toutput\n" + "\n".join(rows) + "\n"
        atomic_write_text(out / "conversions.tsv", table)
    if summary.written + summary.skipped == 0:
        raise SpeechrepError(f"{pairs_file}: no pair could be converted ({summary})")
    return summary

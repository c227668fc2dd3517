"""VCC 2020 task 1 (Zhao et al. 2020; intra-lingual English) → one `vc_<target>` subset per target speaker,
the layout of the SUPERB-SG any-to-one VC task (`speechrep.downstream.tasks.vc`).

Layout: the unzipped archives of github.com/nii-yamagishilab/VCC2020-database —
`source/<SEF1|SEF2|SEM1|SEM2>/E1xxxx.wav` (the sources' training utterances),
`target_task1/<TEF1|TEF2|TEM1|TEM2>/E1xxxx.wav` (the targets' training utterances),
`vcc2020_database_evaluation/<source>/E3xxxx.wav` (the sources' evaluation sentences) and
`vcc2020_database_groundtruth/<target>/E3xxxx.wav` (the targets' recordings of them), plus optionally the
transcriptions `vcc2020_database_transcriptions/transcriptions_{training,evaluation}/*Eng*.txt`
(`<id> <text>` lines). Recordings are resampled to 16 kHz on load.

Per target T, `vc_<t>` (lower case) holds:
- train: T's training utterances (the decoder learns T's voice);
- dev: the sources' training utterances whose sentence T also recorded, `custom["target_audio"]` the path of
  T's recording (the parallel part of the training data, for checkpoint selection);
- test: the sources' evaluation sentences, `custom["target_audio"]` T's ground-truth recording.
SUPERB-SG reports the mean over the four targets: `speechrep benchmark ... --tasks vc vc.subset=vc_tef1`,
and so on for each.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet, MonoCut

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
)

SOURCES = ("SEF1", "SEF2", "SEM1", "SEM2")
TARGETS = ("TEF1", "TEF2", "TEM1", "TEM2")
FOLDERS = {"train_source": "source", "train_target": "target_task1",
           "eval_source": "vcc2020_database_evaluation", "eval_target": "vcc2020_database_groundtruth"}


def read_transcriptions(corpus_dir: Path) -> dict[str, str]:
    """Sentence id → English text from the transcription files that exist (`<id> <text>` lines)."""
    texts: dict[str, str] = {}
    for path in sorted((corpus_dir / "vcc2020_database_transcriptions").glob("transcriptions_*/*Eng*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            sentence, _, text = line.strip().partition(" ")
            if sentence and text:
                texts[sentence] = text.strip()
    return texts


def _speaker_files(folder: Path, speaker: str) -> dict[str, Path]:
    """Sentence id → wav of one speaker's folder (a CorpusLayoutError when it is missing or empty)."""
    files = {p.stem: p for p in sorted(require(folder / speaker, f"{speaker} folder").glob("*.wav"))}
    if not files:
        raise CorpusLayoutError(f"{folder / speaker}: no .wav files")
    return files


def _cut(path: Path, speaker: str, texts: dict[str, str], target_audio: Path | None = None) -> MonoCut:
    rec = at_sample_rate(recording(path, f"{speaker}_{path.stem}"))
    custom = {"target_audio": str(target_audio)} if target_audio is not None else None
    return whole_cut(rec, text=texts.get(path.stem), speaker=speaker, custom=custom)


def prepare_vcc2020(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read VCC 2020 task 1 into `vc_<target>/{train,dev,test}` cuts (module docstring)."""
    subsets = {f"vc_{t.lower()}": ("train", "dev", "test") for t in TARGETS}
    done = load_if_done(output_dir, subsets)
    if done:
        return done
    corpus_dir = Path(corpus_dir)
    folders = {key: require(corpus_dir / name, f"{name} folder") for key, name in FOLDERS.items()}
    texts = read_transcriptions(corpus_dir)
    skipped = SkipReport()
    sources = {s: _speaker_files(folders["train_source"], s) for s in SOURCES}
    evaluations = {s: _speaker_files(folders["eval_source"], s) for s in SOURCES}
    manifests: Manifests = {}
    for target in TARGETS:
        own = _speaker_files(folders["train_target"], target)
        truth = _speaker_files(folders["eval_target"], target)

        def cuts(pairs: list[tuple[Path, str, Path | None]]) -> CutSet:
            made = [skipped.attempt(lambda p=p, s=s, t=t: _cut(p, s, texts, t)) for p, s, t in pairs]
            return CutSet.from_cuts(c for c in made if c is not None)

        manifests[f"vc_{target.lower()}"] = {
            "train": cuts([(path, target, None) for path in own.values()]),
            "dev": cuts([(path, s, own[sentence]) for s in SOURCES
                         for sentence, path in sources[s].items() if sentence in own]),
            "test": cuts([(path, s, truth[sentence]) for s in SOURCES
                          for sentence, path in evaluations[s].items() if sentence in truth]),
        }
    skipped.report(output_dir, "vcc2020")
    return write_manifests(manifests, output_dir)

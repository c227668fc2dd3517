"""Libri2Mix (Cosentino et al. 2020, arXiv:2005.11262) → `ss` (mixture + sources) and `sd` (who speaks when).

Layout (one mode of the generated corpus, e.g. `Libri2Mix/wav16k/max/`):
`metadata/mixture_<part>_mix_clean.csv` (columns `mixture_ID,mixture_path,source_1_path,source_2_path,length`)
and `<part>/{mix_clean,s1,s2}/<ID>.wav`. The metadata's paths are absolute paths of the machine that generated
the corpus, so files are found by their mixture ID inside the part folder. A mixture ID joins the two
LibriSpeech utterance ids (`4077-13754-0001_5142-33396-0065`), whose first fields are the speakers.
`ss`: one cut per mixture with the sources as extra Recording fields `source1`, `source2`
(`cut.load_source1()`), and one whole-length supervision per source (its speaker, `custom["source"]`: 1, 2).
`sd`: the same mixtures with one supervision per speech segment of each source, found from the source's
frame energy (speech = within `threshold_db` of the source's loudest 10 ms frame, pauses shorter than
`min_pause` bridged); `sd/<split>.rttm` holds the same segments in RTTM.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut, SupervisionSegment
from tqdm.auto import tqdm

from speechrep.storage import atomic_write_text
from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
    load_if_done,
    read_audio,
    recording,
    require,
    write_manifests,
)

DEFAULT_PARTS = {"train": "train-100", "dev": "dev", "test": "test"}
FRAME_S = 0.01


def activity_segments(
    audio: np.ndarray, sample_rate: int, threshold_db: float = -40.0, min_pause: float = 0.3
) -> list[tuple[float, float]]:
    """(start, end) seconds where `audio` is active: 10 ms frames within `threshold_db` of the loudest one."""
    hop = int(round(FRAME_S * sample_rate))
    n = len(audio) // hop
    if n == 0:
        return []
    energy = np.square(audio[: n * hop].reshape(n, hop).astype(np.float64)).mean(axis=1)
    db = 10 * np.log10(energy + 1e-12)
    active = db > db.max() + threshold_db
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return []
    keep = (starts[1:] - ends[:-1]) * FRAME_S >= min_pause  # pauses that split two segments
    starts = np.concatenate([starts[:1], starts[1:][keep]])
    ends = np.concatenate([ends[:-1][keep], ends[-1:]])
    return [
        (round(s * hop / sample_rate, 4), round(e * hop / sample_rate, 4))
        for s, e in zip(starts, ends, strict=True)
    ]


def _read_ids(meta_csv: Path) -> list[str]:
    """Mixture IDs of one metadata CSV."""
    with meta_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "mixture_ID" not in rows[0]:
        raise CorpusLayoutError(f"{meta_csv}: no mixture_ID column")
    return [row["mixture_ID"] for row in rows]


def _mixture_cuts(
    part_dir: Path, mix_id: str, mixture: str, threshold_db: float, min_pause: float
) -> tuple[MonoCut, MonoCut]:
    """(ss cut, sd cut) of one mixture; an AudioError when one of its three files is missing or unreadable."""
    speakers = [utt.split("-")[0] for utt in mix_id.split("_")]
    if len(speakers) != 2:
        raise CorpusLayoutError(f"{part_dir / mixture / mix_id}.wav: not a two-utterance mixture ID")
    mix = recording(part_dir / mixture / f"{mix_id}.wav", mix_id, "mixture audio")
    sources = {k: part_dir / f"s{k}" / f"{mix_id}.wav" for k in (1, 2)}
    segments = []
    for k, path in sources.items():
        audio, sample_rate = read_audio(path, "source audio")
        for j, (start, end) in enumerate(activity_segments(audio, sample_rate, threshold_db, min_pause)):
            end = min(end, mix.duration)
            segments.append(
                SupervisionSegment(
                    id=f"{mix_id}-{speakers[k - 1]}-{k}-{j:03d}",
                    recording_id=mix_id,
                    start=start,
                    duration=round(end - start, 4),
                    channel=0,
                    speaker=speakers[k - 1],
                    language="en",
                )
            )
    segments.sort(key=lambda s: s.start)
    per_source = [
        SupervisionSegment(
            id=f"{mix_id}_s{k}",
            recording_id=mix_id,
            start=0.0,
            duration=mix.duration,
            channel=0,
            speaker=speakers[k - 1],
            language="en",
            custom={"source": k},
        )
        for k in sources
    ]
    custom = {f"source{k}": recording(path, f"{mix_id}_s{k}", "source audio") for k, path in sources.items()}
    ss = MonoCut(mix_id, 0.0, mix.duration, 0, recording=mix, supervisions=per_source, custom=custom)
    sd = MonoCut(mix_id, 0.0, mix.duration, 0, recording=mix, supervisions=segments)
    return ss, sd


def _part_cuts(
    root: Path, part: str, mixture: str, threshold_db: float, min_pause: float, skipped: SkipReport
) -> tuple[list[MonoCut], list[MonoCut]]:
    """(ss cuts, sd cuts) of one part."""
    ids = _read_ids(require(root / "metadata" / f"mixture_{part}_{mixture}.csv", "mixture metadata"))
    part_dir = require(root / part, "part folder")
    ss, sd = [], []
    for mix_id in tqdm(ids, desc=f"Libri2Mix {part}", leave=False):
        pair = skipped.attempt(lambda m=mix_id: _mixture_cuts(part_dir, m, mixture, threshold_db, min_pause))
        if pair is not None:
            ss.append(pair[0])
            sd.append(pair[1])
    return ss, sd


def rttm_lines(cuts: CutSet) -> list[str]:
    """One RTTM `SPEAKER` line per supervision of each cut."""
    return [
        f"SPEAKER {c.recording_id} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>"
        for c in cuts
        for s in c.supervisions
    ]


def prepare_libri2mix(
    corpus_dir: Path,
    output_dir: Path | None = None,
    parts: dict[str, str] = DEFAULT_PARTS,
    mixture: str = "mix_clean",
    threshold_db: float = -40.0,
    min_pause: float = 0.3,
) -> Manifests:
    """Read one Libri2Mix mode folder into `ss/` and `sd/` {train,dev,test} cuts plus `sd/<split>.rttm`."""
    done = load_if_done(output_dir, {"ss": parts, "sd": parts}, [f"sd/{split}.rttm" for split in parts])
    if done:
        return done
    root = Path(corpus_dir)
    manifests: Manifests = {"ss": {}, "sd": {}}
    skipped = SkipReport()
    for split, part in parts.items():
        ss, sd = _part_cuts(root, part, mixture, threshold_db, min_pause, skipped)
        manifests["ss"][split], manifests["sd"][split] = CutSet.from_cuts(ss), CutSet.from_cuts(sd)
    skipped.report(output_dir, "libri2mix")
    write_manifests(manifests, output_dir)
    if output_dir is not None:
        for split, cuts in manifests["sd"].items():
            atomic_write_text(Path(output_dir) / "sd" / f"{split}.rttm", "\n".join(rttm_lines(cuts)) + "\n")
    return manifests

"""VoxCeleb1 (Nagrani et al. 2017) → `sid` (closed-set identification) and `asv` (verification trials).

Layout: `wav/<speaker>/<video>/<nnnnn>.wav`, `iden_split.txt` (`<1|2|3> <speaker>/<video>/<nnnnn>.wav`: train,
dev, test of the identification protocol) and the verification list `veri_test2.txt` (the cleaned list,
preferred) or `veri_test.txt` (`<1|0> <enrol path> <test path>`). Cut ids are `<speaker>-<video>-<nnnnn>`.
`asv`: the test split holds the utterances of the trial list, `asv/trials.txt` the trials with cut ids
(`<1|0> <cut id> <cut id>`); the speakers outside the trials are the training pool, of which every
twentieth speaker is held out as dev.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet, MonoCut

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
    write_text_atomic,
)

IDEN_SPLITS = {"1": "train", "2": "dev", "3": "test"}
TRIAL_LISTS = ("veri_test2.txt", "veri_test.txt")  # the cleaned list first
ASV_DEV_EVERY = 20


def cut_id_of(rel: str) -> str:
    """`id10270/x6uYqmx31kE/00001.wav` → `id10270-x6uYqmx31kE-00001`."""
    return rel.removesuffix(".wav").replace("/", "-")


def _parse_lines(path: Path, fields: int) -> list[list[str]]:
    """Whitespace-split lines of a protocol file, each required to have `fields` fields."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        if len(row) != fields:
            raise CorpusLayoutError(f"{path}:{i}: expected {fields} fields, got {len(row)}")
    return rows


class _Cuts:
    """One cut per wav, built on first use and shared by the subsets."""

    def __init__(self, wav_dir: Path) -> None:
        self.wav_dir, self.cache = wav_dir, {}

    def __call__(self, rel: str) -> MonoCut:
        if rel not in self.cache:
            rec = recording(require(self.wav_dir / rel, "audio listed in the protocol"), cut_id_of(rel))
            self.cache[rel] = whole_cut(rec, speaker=rel.split("/")[0])
        return self.cache[rel]


def prepare_voxceleb1(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read VoxCeleb1 into `sid/{train,dev,test}` and `asv/{train,dev,test}` cuts plus `asv/trials.txt`."""
    corpus_dir = Path(corpus_dir)
    done = load_if_done(output_dir, {"sid": IDEN_SPLITS.values(), "asv": IDEN_SPLITS.values()})
    if done and (output_dir / "asv" / "trials.txt").is_file():
        return done
    wav_dir = require(corpus_dir / "wav", "wav folder")
    iden = _parse_lines(require(corpus_dir / "iden_split.txt", "identification split"), 2)
    trial_list = next((corpus_dir / n for n in TRIAL_LISTS if (corpus_dir / n).is_file()), None)
    if trial_list is None:
        raise CorpusLayoutError(f"{corpus_dir}: missing the verification list ({' or '.join(TRIAL_LISTS)})")
    trials = _parse_lines(trial_list, 3)
    cut_of = _Cuts(wav_dir)

    sid: dict[str, list[MonoCut]] = {split: [] for split in IDEN_SPLITS.values()}
    for code, rel in iden:
        if code not in IDEN_SPLITS:
            raise CorpusLayoutError(f"{corpus_dir / 'iden_split.txt'}: unknown split code {code!r} for {rel}")
        sid[IDEN_SPLITS[code]].append(cut_of(rel))

    trial_files = sorted({rel for _, a, b in trials for rel in (a, b)})
    trial_speakers = {rel.split("/")[0] for rel in trial_files}
    all_files = sorted(p.relative_to(wav_dir).as_posix() for p in wav_dir.glob("*/*/*.wav"))
    pool_speakers = sorted({rel.split("/")[0] for rel in all_files} - trial_speakers)
    dev_speakers = set(pool_speakers[ASV_DEV_EVERY - 1 :: ASV_DEV_EVERY] or pool_speakers[-1:])
    asv: dict[str, list[MonoCut]] = {"train": [], "dev": [], "test": [cut_of(rel) for rel in trial_files]}
    for rel in all_files:
        speaker = rel.split("/")[0]
        if speaker not in trial_speakers:
            asv["dev" if speaker in dev_speakers else "train"].append(cut_of(rel))

    manifests = write_manifests(
        {
            "sid": {s: CutSet.from_cuts(c) for s, c in sid.items()},
            "asv": {s: CutSet.from_cuts(c) for s, c in asv.items()},
        },
        output_dir,
    )
    if output_dir is not None:
        lines = [f"{label} {cut_id_of(a)} {cut_id_of(b)}" for label, a, b in trials]
        write_text_atomic(Path(output_dir) / "asv" / "trials.txt", "\n".join(lines) + "\n")
    return manifests

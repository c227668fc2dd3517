"""Santa Barbara Corpus of Spoken American English (Du Bois et al. 2000-2005) → the domain `ood_asr/sbcsae`:
SUPERB-SG's spontaneous-speech OOD-ASR (`speechrep.downstream.tasks.ood_asr`).

Layout: what the preprocessing that s3prl's OOD-ASR README points to writes
(github.com/vectominist/SBCSAE-preprocess, run as `preprocess.py --trn DATA/trn --mp3 DATA/mp3 --wav DIR/wav
--tsv DIR`):
`DIR/wav/SBC<nnn>_<start>-<end>.wav`, 16 kHz segments of the 60 recordings (start and end in hundredths of a
second, six digits; at most 15 s; overlapping talk, unsure and unintelligible words removed), and
`DIR/{train,dev,test}.tsv`, tab-separated with the header `path  sentence`, each sentence upper case (A-Z,
apostrophe, space). Conversations 1-46 are train, 47-53 dev and 54-60 test. Transcripts are lower-cased;
the speaker is the conversation (`SBC009`: segment names carry no speaker), and `custom` holds the segment's
`conversation`, `start` and `end` in seconds when the name has them. A missing or unreadable wav is left
out and listed in OUT/skipped_sbcsae.txt.
"""

from __future__ import annotations

import re
from pathlib import Path

from lhotse import CutSet

from speechrep.data.recipes._common import (
    SPLITS,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    read_tsv,
    recording,
    require,
    whole_cut,
    write_manifests,
)

SUBSET = "ood_asr/sbcsae"
_SEGMENT = re.compile(r"(SBC\d{3})_(\d+)-(\d+)")


def segment_labels(name: str) -> dict[str, object]:
    """`conversation`, `start` and `end` (s) of a segment file name `SBC009_000000-001316.wav`, or {}."""
    match = _SEGMENT.fullmatch(Path(name).stem)
    if match is None:
        return {}
    return {"conversation": match[1], "start": int(match[2]) / 100, "end": int(match[3]) / 100}


def prepare_sbcsae(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read the preprocessed SBCSAE segments into `ood_asr/sbcsae/` {train,dev,test} cuts with `text`."""
    done = load_if_done(output_dir, {SUBSET: SPLITS})
    if done:
        return done
    corpus_dir = Path(corpus_dir)
    wav_dir = require(corpus_dir / "wav", "folder of SBCSAE segment wavs (SBCSAE-preprocess --wav)")
    skipped = SkipReport()
    splits: dict[str, CutSet] = {}
    for split in SPLITS:
        cuts = []
        for _, row in read_tsv(corpus_dir / f"{split}.tsv", ("path", "sentence"), "SBCSAE transcript list"):
            text = " ".join(row["sentence"].split()).lower()
            name = row["path"]
            rec = skipped.attempt(lambda: recording(wav_dir / name, Path(name).stem, "SBCSAE segment"))
            if rec is None or not text:
                continue
            labels = segment_labels(name)
            cuts.append(whole_cut(at_sample_rate(rec), text=text, custom=labels or None,
                                  speaker=str(labels.get("conversation", Path(name).stem.split("_")[0]))))
        splits[split] = CutSet.from_cuts(cuts)
    skipped.report(output_dir, "sbcsae")
    return write_manifests({SUBSET: splits}, output_dir)

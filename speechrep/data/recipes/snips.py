"""Audio SNIPS (SNIPS NLU sentences spoken by TTS voices, as used by SUPERB SF) → the `sf` subset.

Layout: `all.iob.snips.txt` with one line per utterance,
`<speaker>-snips-<split>-<n> BOS w1 ... wN EOS<TAB>O t1 ... tN <intent>` (IOB slot tags, one per word),
and the audio as `{train,valid,test}/**/<speaker>-snips-<split>-<n>.wav`. Speakers are split as in SUPERB
(train, dev and test speakers disjoint). Each cut has `text`, and `custom` `tags` (IOB, one per word), `slots`
(a list of `{"type", "value"}`) and `intent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from lhotse import CutSet

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
)

SPEAKERS = {
    "train": ("Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"),
    "dev": ("Aditi", "Amy", "Geraint", "Nicole"),
    "test": ("Brian", "Emma", "Raveena", "Russell"),
}
FOLDERS = {"train": "train", "dev": "valid", "test": "test"}


def slots_from_iob(words: Sequence[str], tags: Sequence[str]) -> list[dict[str, str]]:
    """`[{"type", "value"}]` spans of IOB tags (`B-x I-x` → one slot of type x over those words)."""
    slots: list[dict[str, str]] = []
    for word, tag in zip(words, tags, strict=True):
        if tag.startswith("B-") or (tag.startswith("I-") and (not slots or slots[-1]["type"] != tag[2:])):
            slots.append({"type": tag[2:], "value": word})
        elif tag.startswith("I-"):
            slots[-1]["value"] += f" {word}"
    return slots


def read_iob_file(path: Path) -> dict[str, dict]:
    """Utterance id → {text, tags, slots, intent} from `all.iob.snips.txt`."""
    labels = {}
    for i, line in enumerate(require(path, "IOB label file").read_text().splitlines(), 1):
        if not line.strip():
            continue
        left, _, right = line.partition("\t")
        words, tags = left.split(), right.split()
        # words: id BOS w1..wN EOS; tags: O t1..tN intent
        if len(words) < 3 or words[1] != "BOS" or words[-1] != "EOS" or len(tags) != len(words) - 1:
            raise CorpusLayoutError(f"{path}:{i}: expected '<id> BOS words EOS<TAB>O tags <intent>'")
        words, tags = words[2:-1], tags[1:-1]
        labels[line.split()[0]] = {
            "text": " ".join(words),
            "tags": tags,
            "slots": slots_from_iob(words, tags),
            "intent": right.split()[-1],
        }
    return labels


def prepare_snips(
    corpus_dir: Path, output_dir: Path | None = None, speakers: Mapping[str, Sequence[str]] = SPEAKERS
) -> Manifests:
    """Read Audio SNIPS into `sf/{train,dev,test}` cuts with slot tags, slots and intent."""
    done = load_if_done(output_dir, {"sf": speakers})
    if done:
        return done
    root = Path(corpus_dir)
    labels = read_iob_file(root / "all.iob.snips.txt")
    sf = {}
    for split, split_speakers in speakers.items():
        folder = require(root / FOLDERS[split], "audio folder")
        cuts = []
        for wav in sorted(folder.rglob("*.wav")):
            speaker = wav.stem.split("-")[0]
            if speaker not in split_speakers or wav.stem not in labels:
                continue
            label = labels[wav.stem]
            cuts.append(
                whole_cut(
                    recording(wav, wav.stem),
                    text=label["text"],
                    speaker=speaker,
                    custom={k: label[k] for k in ("tags", "slots", "intent")},
                )
            )
        sf[split] = CutSet.from_cuts(cuts)
    return write_manifests({"sf": sf}, output_dir)

"""Audio SNIPS (SNIPS NLU sentences spoken by TTS voices, as used by SUPERB SF) → the `sf` subset.

Layout: `all.iob.snips.txt` with one line per utterance,
`<speaker>-snips-<split>-<n> BOS w1 ... wN EOS<TAB>O t1 ... tN <intent>` (IOB slot tags, one per word),
and the audio as `{train,valid,test}/**/<speaker>-snips-<split>-<n>.wav`. Speakers are split as in SUPERB
(train, dev and test speakers disjoint). Each cut has `text`, and `custom` `tags` (IOB, one per word), `slots`
(a list of `{"type", "value"}`), `tagged_text` (`play [artist: nina simone]`) and `intent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from lhotse import CutSet

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
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


def _slot_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, end) word indices of each slot: `B-x` or a stray `I-x` opens one, `I-x` extends it."""
    spans: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        kind = tag[2:]
        if tag.startswith("I-") and spans and spans[-1][0] == kind and spans[-1][2] == i:
            spans[-1] = (kind, spans[-1][1], i + 1)
        else:
            spans.append((kind, i, i + 1))
    return spans


def slots_from_iob(words: Sequence[str], tags: Sequence[str]) -> list[dict[str, str]]:
    """`[{"type", "value"}]` of IOB tags (`B-x I-x` → one slot of type x over those words)."""
    return [{"type": kind, "value": " ".join(words[a:b])} for kind, a, b in _slot_spans(tags)]


def tagged_text(words: Sequence[str], tags: Sequence[str]) -> str:
    """The sentence with each slot written in place as `[type: value]`."""
    starts = {a: (kind, b) for kind, a, b in _slot_spans(tags)}
    out, i = [], 0
    while i < len(words):
        if i in starts:
            kind, end = starts[i]
            out.append(f"[{kind}: {' '.join(words[i:end])}]")
            i = end
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


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
            "tagged_text": tagged_text(words, tags),
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
    skipped, sf = SkipReport(), {}
    for split, split_speakers in speakers.items():
        folder = require(root / FOLDERS[split], "audio folder")
        cuts = []
        for wav in sorted(folder.rglob("*.wav")):
            speaker = wav.stem.split("-")[0]
            if speaker not in split_speakers or wav.stem not in labels:
                continue
            label = labels[wav.stem]
            rec = skipped.attempt(lambda w=wav: recording(w, w.stem))
            if rec is not None:
                custom = {k: label[k] for k in ("tags", "slots", "tagged_text", "intent")}
                cuts.append(whole_cut(rec, text=label["text"], speaker=speaker, custom=custom))
        sf[split] = CutSet.from_cuts(cuts)
    skipped.report(output_dir, "snips")
    return write_manifests({"sf": sf}, output_dir)

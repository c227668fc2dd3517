"""Out-of-domain test splits (issue 16): `speechrep synth --domains unseen,accented,fast,slow,spontaneous`.

Each domain split is a copy of a subset's test split changed in one respect, item by item: the same texts,
labels and rendering seeds (so the same padding, reverberation and background noise), one domain's change
on top. A head's score on `test_<domain>` against `test` therefore measures that change and nothing else:

- `unseen`: every test speaker replaced by a new one of the same register whose voice variant no split of
  the corpus uses (`speakers.HELD_OUT_*_VARIANTS`; English accent, pitch, rate and channel colouring drawn
  anew); the utterance keeps its offsets from its speaker (an ER style's rate and pitch change stay). Not
  for `sid`, whose closed speaker set is the label.
- `accented`: the same speakers (same id, variant, pitch, channel colouring) reading the same English text
  with an eSpeak voice of another language (`ACCENT_LANGUAGES`, one per speaker), which applies its own
  letter-to-sound rules. The phone labels (`phones`) stay those of the speaker's English reading; the
  audio's phone alignment is unknown (`phone_alignment` is absent; `word_alignment` is the accented audio's).
- `fast` / `slow`: each utterance at `FAST_FACTOR` / `SLOW_FACTOR` times its own eSpeak rate, within eSpeak's
  80–450 words per minute; slow speech also gets `SLOW_WORD_GAP` between words (at eSpeak's floor of 80 wpm
  the rate alone is not always halved). KS clips of slow speech are `CLIP_SECONDS["slow"]` long.
- `spontaneous`: fillers (`FILLERS`), a repeated word and hesitation pauses (SSML breaks) inserted into the
  text; KS gets one filler before or after its word (clips `CLIP_SECONDS["spontaneous"]` long). The
  transcript (`sup.text`) is verbatim, fillers included, and PR's phones and alignments cover every spoken
  word; the labels of KS, IC and ER are unchanged.

Splits are planned from the subset's own plan (re-made from the seed: nothing is read back) with a random
stream of their own, so adding a domain changes no existing file and a domain split is the same whether
built alone or with others.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from speechrep.data.synth.render import UtteranceSpec, job_accented
from speechrep.data.synth.speakers import (
    HELD_OUT_FEMALE_VARIANTS,
    HELD_OUT_MALE_VARIANTS,
    Speaker,
    make_speakers,
)
from speechrep.data.synth.subsets import Item, Plan, _single_item

DOMAINS: tuple[str, ...] = ("unseen", "accented", "fast", "slow", "spontaneous")
_UTTERANCE_SUBSETS = ("pr", "asr", "ks", "sid", "er", "ic")
# domain -> the subsets that get its split (sid's speakers are its labels: no unseen speakers there)
DOMAIN_SUBSETS: dict[str, tuple[str, ...]] = {
    domain: tuple(s for s in _UTTERANCE_SUBSETS if not (domain == "unseen" and s == "sid"))
    for domain in DOMAINS
}
# eSpeak NG languages that read English words with their own rules (checked by hand: hi, ru, el, ja, cmn and
# vi switch to their English voice for Latin-script words and would not sound accented).
ACCENT_LANGUAGES: tuple[str, ...] = (
    "de", "fr", "es", "it", "nl", "pl", "pt", "sv", "cs", "ro", "hu", "fi", "tr",
)
FAST_FACTOR, SLOW_FACTOR = 2.0, 0.5
ESPEAK_RATES = (80, 450)  # the words-per-minute range eSpeak NG accepts (it clamps outside it)
SLOW_WORD_GAP = 3  # eSpeak's pause between words, 10 ms units at its default rate (longer when slower)
CLIP_SECONDS = {"slow": 2.0, "spontaneous": 2.0}  # fixed-length clips (KS) of these domains: no word cut
FILLERS: tuple[str, ...] = ("uh", "um", "er", "you know", "i mean")
HESITATION_MS = (250, 600)  # a hesitation pause's length, drawn uniformly


def domain_split(domain: str) -> str:
    """The split name of a domain: `test_<domain>`."""
    return f"test_{domain}"


def plan_domain(
    subset: str, domain: str, rng: np.random.Generator, plan: Plan, audio_dir: Path
) -> list[Item]:
    """The items of `subset`'s `test_<domain>` split: one variant of each item of the plan's test split."""
    test_speakers = plan.speakers["test"]
    if domain == "unseen":
        others = _unseen_speakers(rng, test_speakers, subset)
    elif domain == "accented":
        languages = {s.id: ACCENT_LANGUAGES[int(rng.integers(len(ACCENT_LANGUAGES)))] for s in test_speakers}
    items = []
    for index, item in enumerate(plan.items["test"]):
        if item.single is None:
            raise ValueError(f"{subset}: test item {index} is not a single utterance; no {domain} split")
        single = dict(item.single)
        spec: UtteranceSpec = single["spec"]
        reference = None
        if domain == "unseen":
            spec = respoken(spec, others[spec.speaker.id])
        elif domain == "accented":
            reference = spec
            spec = replace(spec, speaker=replace(spec.speaker, accent=languages[spec.speaker.id]))
        elif domain == "fast":
            spec = replace(spec, rate=_rate(spec.rate * FAST_FACTOR))
        elif domain == "slow":
            spec = replace(spec, rate=_rate(spec.rate * SLOW_FACTOR), wordgap=SLOW_WORD_GAP)
        elif domain == "spontaneous" and spec.text:
            ssml, single["transcript"] = spontaneous_text(rng, spec.text.split(), keyword=subset == "ks")
            spec = replace(spec, text=ssml, ssml=True)
        elif domain != "spontaneous":
            raise ValueError(f"unknown domain {domain!r} (choose from {', '.join(DOMAINS)})")
        if spec.total_duration is not None and domain in CLIP_SECONDS:
            spec = replace(spec, total_duration=CLIP_SECONDS[domain])
        cut_id = f"{subset}_{domain_split(domain)}_{index:05d}"
        cut_custom = {**(single["cut_custom"] or {}), "domain": domain, "voice": spec.speaker.voice,
                      "wpm": spec.rate}
        made = _single_item(audio_dir, cut_id, spec, single["custom"], cut_custom, single["alignments"],
                            single["transcript"])
        if reference is not None and spec.text:  # the English reading gives the phone labels
            made = Item(([spec, reference], job_accented, (spec, reference, audio_dir / f"{cut_id}.flac")),
                        made.to_cuts, made.single)
        items.append(made)
    return items


def _rate(words_per_minute: float) -> int:
    return int(np.clip(round(words_per_minute), *ESPEAK_RATES))


def _unseen_speakers(rng: np.random.Generator, speakers: list[Speaker], subset: str) -> dict[str, Speaker]:
    """Test speaker id -> a new speaker of the same register with a held-out voice variant."""
    pool = make_speakers(rng, 2 * len(speakers), f"{subset}_unseen_spk", HELD_OUT_FEMALE_VARIANTS,
                         HELD_OUT_MALE_VARIANTS)
    registers = {"f": iter(pool[0::2]), "m": iter(pool[1::2])}  # make_speakers alternates f, m
    return {s.id: replace(next(registers[s.gender]), id=f"{subset}_unseen_spk{k:03d}")
            for k, s in enumerate(speakers)}


def respoken(spec: UtteranceSpec, speaker: Speaker) -> UtteranceSpec:
    """`spec` said by another speaker: rate, pitch and pitch range keep their offsets from the speaker's."""
    old = spec.speaker
    range_factor = speaker.pitch_range / max(old.pitch_range, 1)
    return replace(
        spec,
        speaker=speaker,
        rate=_rate(spec.rate * speaker.rate / old.rate),
        pitch=int(np.clip(spec.pitch + speaker.pitch - old.pitch, 0, 99)),
        pitch_range=int(np.clip(round(spec.pitch_range * range_factor), 0, 99)),
    )


def spontaneous_text(rng: np.random.Generator, words: list[str], keyword: bool = False) -> tuple[str, str]:
    """(SSML for eSpeak, verbatim transcript) of `words` said spontaneously: a filler and a pause before or
    after a keyword; in a sentence a repeated word (a false start, then a pause) and one or two fillers, each
    followed by a hesitation pause."""
    pause = object()

    def filler() -> list:
        return FILLERS[int(rng.integers(len(FILLERS)))].split() + [pause]

    if keyword:
        tokens = filler() + words if rng.random() < 0.5 else words + [pause] + filler()[:-1]
    else:
        repeated = int(rng.integers(len(words)))
        tokens = words[: repeated + 1] + [pause] + words[repeated:]
        for _ in range(int(rng.integers(1, 3))):
            at = int(rng.integers(len(tokens) + 1))
            tokens[at:at] = filler()
    ssml = " ".join(f'<break time="{int(rng.integers(HESITATION_MS[0], HESITATION_MS[1] + 1))}ms"/>'
                    if t is pause else t for t in tokens)
    return f"<speak>{ssml}</speak>", " ".join(t for t in tokens if t is not pause)

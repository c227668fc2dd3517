"""Synthetic speakers: fixed combinations of eSpeak voice, variant, pitch, pitch range, rate and a
channel colouring (a random EQ drawn once per speaker)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# English voices of eSpeak NG (accents) and voice variants (timbres) that exist in espeakng-loader's data.
ACCENTS: tuple[str, ...] = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
FEMALE_VARIANTS: tuple[str, ...] = (
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "linda",
    "steph",
    "anika",
    "Annie",
    "aunty",
    "belinda",
    "grandma",
)
MALE_VARIANTS: tuple[str, ...] = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "klatt3",
    "klatt4",
    "david",
    "paul",
    "quincy",
    "max",
    "Andy",
    "Alex",
    "Lee",
    "Michael",
    "grandpa",
    "travis",
    "john",
    "benjamin",
)
# Variants no split of the corpus uses: the timbres of the out-of-domain `unseen` test splits (`domains`).
HELD_OUT_FEMALE_VARIANTS: tuple[str, ...] = ("Alicia", "Andrea", "steph2", "steph3", "shelby")
HELD_OUT_MALE_VARIANTS: tuple[str, ...] = (
    "antonio",
    "edward",
    "gustave",
    "iven2",
    "michel",
    "norbert",
    "pedro",
    "robert",
    "Mario",
    "Reed",
    "marcelo",
    "sandro",
    "Gene",
    "miguel",
    "pablo",
    "mike2",
)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker; utterances jitter `rate` and `pitch` around these values."""

    id: str
    accent: str
    variant: str
    gender: str  # "f" or "m": the variant's register, used for balanced sampling only
    pitch: int  # eSpeak base pitch, 0..99
    pitch_range: int  # eSpeak pitch range, 0..99
    rate: int  # words per minute
    eq_seed: int  # seeds `speechrep.audio.augment.random_eq`: the speaker's fixed channel colouring

    @property
    def voice(self) -> str:
        """The eSpeak voice name, e.g. `en-us+f3`."""
        return f"{self.accent}+{self.variant}"


def make_speakers(
    rng: np.random.Generator,
    count: int,
    prefix: str,
    female_variants: tuple[str, ...] = FEMALE_VARIANTS,
    male_variants: tuple[str, ...] = MALE_VARIANTS,
) -> list[Speaker]:
    """`count` speakers with ids `{prefix}{index:03d}`, alternating registers, other settings random."""
    speakers = []
    for index in range(count):
        female = index % 2 == 0
        variants = female_variants if female else male_variants
        speakers.append(
            Speaker(
                id=f"{prefix}{index:03d}",
                accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
                variant=variants[int(rng.integers(len(variants)))],
                gender="f" if female else "m",
                pitch=int(rng.integers(25, 76)),
                pitch_range=int(rng.integers(20, 81)),
                rate=int(rng.integers(140, 211)),
                eq_seed=int(rng.integers(2**31)),
            )
        )
    return speakers

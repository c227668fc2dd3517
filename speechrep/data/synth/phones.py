"""The fixed phone set of the synthetic corpus (the 39 ARPAbet phones of CMUdict, no stress) and the map
from eSpeak NG's English phoneme mnemonics onto it."""

from __future__ import annotations

PHONES: tuple[str, ...] = (
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)

# eSpeak NG English mnemonics (stress marks removed) -> one or more phones. Diphthongs with a schwa or
# r-colouring expand to two phones, as CMUdict spells them ("fire" = F AY ER).
ESPEAK_TO_PHONES: dict[str, tuple[str, ...]] = {
    "p": ("P",),
    "b": ("B",),
    "t": ("T",),
    "t2": ("T",),
    "t#": ("T",),
    "t[": ("T",),
    "?": ("T",),
    "d": ("D",),
    "d2": ("D",),
    "d#": ("D",),
    "k": ("K",),
    "g": ("G",),
    "x": ("K",),
    "f": ("F",),
    "v": ("V",),
    "T": ("TH",),
    "D": ("DH",),
    "s": ("S",),
    "z": ("Z",),
    "S": ("SH",),
    "Z": ("ZH",),
    "h": ("HH",),
    "tS": ("CH",),
    "dZ": ("JH",),
    "m": ("M",),
    "n": ("N",),
    "N": ("NG",),
    "n-": ("N",),
    "m-": ("M",),
    "l": ("L",),
    "l-": ("L",),
    "r": ("R",),
    "r-": ("R",),
    "w": ("W",),
    "w#": ("W",),
    "j": ("Y",),
    "a": ("AE",),
    "aa": ("AE",),
    "a#": ("AH",),
    "A:": ("AA",),
    "A": ("AA",),
    "0": ("AA",),
    "O2": ("AA",),
    "A@": ("AA", "R"),
    "O:": ("AO",),
    "O": ("AO",),
    "O@": ("AO", "R"),
    "o@": ("AO", "R"),
    "V": ("AH",),
    "VR": ("ER",),
    "@": ("AH",),
    "@2": ("AH",),
    "@5": ("AH",),
    "@-": ("AH",),
    "@L": ("AH", "L"),
    "3": ("ER",),
    "3:": ("ER",),
    "IR": ("ER",),
    "E": ("EH",),
    "E2": ("EH",),
    "E#": ("EH",),
    "e@": ("EH", "R"),
    "I": ("IH",),
    "I2": ("IH",),
    "I#": ("IH",),
    "i": ("IY",),
    "i:": ("IY",),
    "i@": ("IH", "R"),
    "i@3": ("IH", "R"),
    "u:": ("UW",),
    "U": ("UH",),
    "U@": ("UH", "R"),
    "eI": ("EY",),
    "e": ("EY",),
    "aI": ("AY",),
    "aI2": ("AY",),
    "aI@": ("AY", "ER"),
    "aI3": ("AY", "ER"),
    "aU": ("AW",),
    "aU@": ("AW", "ER"),
    "OI": ("OY",),
    "oU": ("OW",),
    "@U": ("OW",),
    "o:": ("OW",),
    "o": ("OW",),
}

_STRESS = "',%="


def map_espeak_phoneme(name: str) -> tuple[str, ...]:
    """Phones of `PHONES` for one eSpeak mnemonic; () for pauses, boundaries and unknown symbols."""
    name = name.strip().lstrip(_STRESS)
    if name in ESPEAK_TO_PHONES:
        return ESPEAK_TO_PHONES[name]
    # Rare voice-specific variants ("aI2", "t[") differ from a known symbol by a trailing marker.
    trimmed = name.rstrip("0123456789#[;:")
    return ESPEAK_TO_PHONES.get(trimmed, ())


def map_espeak_phonemes(mnemonics: str) -> list[str]:
    """Phones for an `espeak_TextToPhonemes` string (`_` between phonemes, spaces between words)."""
    phones: list[str] = []
    for word in mnemonics.split():
        for name in word.split("_"):
            phones.extend(map_espeak_phoneme(name))
    return phones

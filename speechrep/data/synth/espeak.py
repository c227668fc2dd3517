"""A ctypes driver for the eSpeak NG library shipped by the `espeakng-loader` wheel.

The library keeps global state, is not thread-safe and drifts slightly over a long-lived process, so
`synthesize` is meant to run inside a freshly forked child of a process that called `initialize()` once
(see `speechrep.data.synth.workers`): every utterance then starts from the same library state.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

ESPEAK_SAMPLE_RATE = 22050

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_SSML = 0x10  # espeakSSML: the text is SSML (<speak>, <prosody>, <emphasis>, ...)
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class Synthesis:
    """What eSpeak produced for one text: 22.05 kHz int16 samples plus phoneme and word events."""

    samples: np.ndarray
    phonemes: list[tuple[str, int]] = field(default_factory=list)  # (eSpeak phoneme name, start sample)
    words: list[tuple[int, int, int]] = field(
        default_factory=list
    )  # (text char offset, length, start sample)


class _State:
    lib: ctypes.CDLL | None = None
    chunks: list[np.ndarray] = []
    phonemes: list[tuple[str, int]] = []
    words: list[tuple[int, int, int]] = []
    callback = None


def _on_synth(wav, num_samples, events) -> int:
    if num_samples > 0:
        _State.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        ev = events[i]
        if ev.type == _EVENT_PHONEME:
            _State.phonemes.append((ev.id.string.decode("ascii", "replace"), ev.sample))
        elif ev.type == _EVENT_WORD:
            _State.words.append((ev.text_position, ev.length, ev.sample))
        i += 1
    return 0


def initialize() -> None:
    """Load the library and voice data from the espeakng-loader wheel (once per process)."""
    if _State.lib is not None:
        return
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS,
        0,
        espeakng_loader.get_data_path().encode(),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
    )
    if rate != ESPEAK_SAMPLE_RATE:
        raise RuntimeError(f"eSpeak NG initialisation failed (returned {rate})")
    _State.callback = _CALLBACK(_on_synth)  # keep a reference: the library holds a raw pointer
    lib.espeak_SetSynthCallback(_State.callback)
    _State.lib = lib


def set_voice(name: str) -> None:
    """Select a voice such as `en-us` or `en-gb-x-rp+f3` (language + optional `+variant`)."""
    initialize()
    if _State.lib.espeak_SetVoiceByName(name.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {name!r}")


def synthesize(
    text: str,
    voice: str,
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    volume: int = 100,
    wordgap: int = 0,
    seed: int = 0,
    ssml: bool = False,
) -> Synthesis:
    """Speak `text` with a voice and prosody settings; returns samples and timed phoneme/word events.

    With `ssml`, `text` is SSML markup: `<prosody rate= pitch= range=>` scales the settings above (relative
    values such as `80%`), `<emphasis>` stresses a word; word events then give positions in the markup."""
    set_voice(voice)
    lib = _State.lib
    lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))  # eSpeak's own jitter (flutter, noise) follows the seed
    for key, value in (
        ("rate", rate),
        ("pitch", pitch),
        ("range", pitch_range),
        ("volume", volume),
        ("wordgap", wordgap),
    ):
        lib.espeak_SetParameter(_PARAM[key], int(value), 0)
    _State.chunks, _State.phonemes, _State.words = [], [], []
    data = text.encode("utf-8") + b"\0"
    flags = _CHARS_UTF8 | (_SSML if ssml else 0)
    err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
    samples = np.concatenate(_State.chunks) if _State.chunks else np.zeros(0, np.int16)
    return Synthesis(samples, list(_State.phonemes), list(_State.words))


def text_to_phonemes(text: str, voice: str = "en-us") -> str:
    """eSpeak's phoneme mnemonics for `text` (words separated by spaces, phonemes by `_`)."""
    set_voice(voice)
    buf = ctypes.c_char_p(text.encode("utf-8"))
    pieces = []
    separator = ord("_") << 8
    while buf.value:
        out = _State.lib.espeak_TextToPhonemes(ctypes.byref(buf), _CHARS_UTF8, separator)
        if out:
            pieces.append(out.decode("utf-8"))
    return " ".join(pieces)

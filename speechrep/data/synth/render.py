"""Rendering one synthetic recording from eSpeak's output (see `workers`): speech at 22.05 kHz →
16 kHz, speaker channel colouring, optional reverberation, padding, gain, a noise floor and background
noise; phone and word alignments come from eSpeak's synthesis events. Each `job_*` function takes the
syntheses of its specs, writes its FLAC files and returns plain metadata for the manifests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from speechrep.audio import augment
from speechrep.audio.io import save_audio
from speechrep.data.synth import espeak
from speechrep.data.synth.phones import map_espeak_phoneme
from speechrep.data.synth.speakers import Speaker

SAMPLE_RATE = 16000
_NOISE_FLOOR_DBFS = (-72.0, -60.0)
_SPEECH_RMS_DBFS = (-32.0, -24.0)
_SPEAKER_EQ_DB, _SESSION_EQ_DB = 5.0, 4.0
_MARKUP = re.compile(r"<[^>]*>|[.?!,]")  # SSML tags and clause punctuation: not part of a word label

Alignment = list[tuple[str, float, float]]  # (label, start_s, end_s)


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that decides one rendered utterance (the same spec renders the same samples)."""

    text: str  # what eSpeak speaks: plain text, or SSML markup when `ssml`
    speaker: Speaker
    seed: int
    rate: int
    pitch: int
    pitch_range: int
    volume: int = 100
    pad: tuple[float, float] = (0.1, 0.1)  # seconds of silence before/after the speech
    total_duration: float | None = None  # fixed clip length: speech placed at a random offset inside
    reverb_rt60: float | None = None
    snr: float | None = None  # background noise (dB against the speech), None for none
    level_db: float = 0.0  # loudness offset (vocal effort of an emotion style)
    tilt_db: float = 0.0  # boost (+) or cut (-) of the 1.5-6 kHz region (vocal effort: bright vs soft)
    ssml: bool = False  # `text` is SSML (prosody and emphasis markup; see `espeak.synthesize`)
    wordgap: int = 0  # extra pause between words, eSpeak's units of 10 ms at its default rate


@dataclass
class Speech:
    """A rendered utterance at 16 kHz with its alignments (times in seconds in `audio`)."""

    audio: np.ndarray
    phones: Alignment
    words: Alignment
    speech_span: tuple[float, float]  # where the speech lies in `audio`


def _event_alignments(text: str, synth: espeak.Synthesis) -> tuple[Alignment, Alignment]:
    total = synth.samples.size
    starts = [sample for _, sample in synth.phonemes] + [total]
    phones: Alignment = []
    for (name, start), end in zip(synth.phonemes, starts[1:]):
        mapped = map_espeak_phoneme(name)
        if not mapped or end <= start:
            continue
        edges = np.linspace(start, end, len(mapped) + 1) / espeak.ESPEAK_SAMPLE_RATE
        phones += [(p, float(a), float(b)) for p, a, b in zip(mapped, edges[:-1], edges[1:])]
    # eSpeak reports one word event per prosodic word; merged function words ("on the") share one.
    words: Alignment = []
    events = sorted(synth.words, key=lambda w: w[2])
    for i, (pos, _, sample) in enumerate(events):
        next_pos = events[i + 1][0] if i + 1 < len(events) else len(text) + 1
        next_sample = events[i + 1][2] if i + 1 < len(events) else total + 1
        label = text[pos - 1 : next_pos - 1].strip()
        inside = [
            p
            for p in phones
            if sample / espeak.ESPEAK_SAMPLE_RATE - 1e-6 <= p[1] < next_sample / espeak.ESPEAK_SAMPLE_RATE
        ]
        if label and inside:
            words.append((label, inside[0][1], inside[-1][2]))
    return phones, words


def _label_text(spec: UtteranceSpec) -> str:
    """The text word labels are cut from: eSpeak's input, with SSML tags and clause punctuation blanked
    when it is SSML (blanked, not removed, so that eSpeak's character positions still index it)."""
    return _MARKUP.sub(lambda m: " " * len(m.group()), spec.text) if spec.ssml else spec.text


def _shift(alignment: Alignment, offset: float, limit: float) -> Alignment:
    out = []
    for label, start, end in alignment:
        start, end = min(max(start + offset, 0.0), limit), min(max(end + offset, 0.0), limit)
        if end > start:
            out.append((label, round(start, 4), round(end, 4)))
    return out


def _trim_bounds(x: np.ndarray, margin: int = 160) -> tuple[int, int]:
    # eSpeak output begins and ends with exact silence; cut it so padding is under our control.
    loud = np.flatnonzero(np.abs(x) > 1e-3 * (np.max(np.abs(x), initial=0.0) + 1e-9))
    if loud.size == 0:
        return 0, 0
    return max(int(loud[0]) - margin, 0), min(int(loud[-1]) + margin, x.size)


def synthesis_request(spec: UtteranceSpec) -> dict:
    """The keyword arguments of `espeak.synthesize` for a spec."""
    return {
        "text": spec.text,
        "voice": spec.speaker.voice,
        "rate": spec.rate,
        "pitch": spec.pitch,
        "pitch_range": spec.pitch_range,
        "volume": spec.volume,
        "seed": spec.seed,
        "ssml": spec.ssml,
        "wordgap": spec.wordgap,
    }


def render_speech(
    spec: UtteranceSpec, synth: espeak.Synthesis, background: bool = True
) -> tuple[Speech, np.ndarray]:
    """Finish eSpeak's output for `spec`; returns the utterance and the same without background noise."""
    rng = np.random.default_rng(spec.seed)
    if spec.text:
        phones, words = _event_alignments(_label_text(spec), synth)
        speech = soxr.resample(
            synth.samples.astype(np.float32) / 32768.0, espeak.ESPEAK_SAMPLE_RATE, SAMPLE_RATE, quality="HQ"
        )
        speech = augment.apply_eq(
            speech, augment.random_eq(np.random.default_rng(spec.speaker.eq_seed), max_gain_db=_SPEAKER_EQ_DB)
        )
        # A milder random EQ per utterance: the channel changes between sessions, as in VoxCeleb.
        speech = augment.apply_eq(speech, augment.random_eq(rng, max_gain_db=_SESSION_EQ_DB))
        if spec.tilt_db:
            speech = augment.apply_eq(speech, augment.peaking_eq(3000.0, spec.tilt_db, 0.5, SAMPLE_RATE))
        if spec.reverb_rt60:
            speech = augment.reverberate(speech, augment.synthetic_rir(rng, SAMPLE_RATE, spec.reverb_rt60))
        begin, end = _trim_bounds(speech)
        speech = speech[begin:end]
    else:  # a clip without speech (KS `_silence_`)
        phones, words, speech, begin = [], [], np.zeros(0, np.float32), 0
    speech_rms = np.sqrt(augment.signal_power(speech)) if speech.size else 0.0
    if speech_rms > 0:
        speech = speech * (10.0 ** ((rng.uniform(*_SPEECH_RMS_DBFS) + spec.level_db) / 20.0) / speech_rms)
        speech_rms = np.sqrt(augment.signal_power(speech))
    if spec.total_duration is not None:
        total = int(round(spec.total_duration * SAMPLE_RATE))
        speech = speech[:total]
        before = int(rng.integers(0, total - speech.size + 1))
        after = total - speech.size - before
    else:
        before, after = (int(round(rng.uniform(0.5, 1.0) * p * SAMPLE_RATE)) for p in spec.pad)
    audio = np.concatenate(
        [np.zeros(before, np.float32), speech.astype(np.float32), np.zeros(after, np.float32)]
    )
    audio += rng.standard_normal(audio.size).astype(np.float32) * 10.0 ** (
        rng.uniform(*_NOISE_FLOOR_DBFS) / 20
    )
    dry = audio.copy()
    if background and spec.snr is not None:
        noise = augment.coloured_noise(rng, audio.size, exponent=float(rng.uniform(0.0, 2.0)))
        if speech_rms > 0:  # SNR against the whole clean clip, as `snr_db(clean, noisy - clean)` measures it
            audio = augment.add_noise(audio, noise, spec.snr)
        else:  # no speech: noise at a level as if against typical speech
            audio = audio + noise * 10.0 ** ((-25.0 - spec.snr) / 20.0)
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak > 0.95:
        audio, dry = audio * (0.95 / peak), dry * (0.95 / peak)
    duration = audio.size / SAMPLE_RATE
    offset = before / SAMPLE_RATE - begin / SAMPLE_RATE
    span = (before / SAMPLE_RATE, (before + speech.size) / SAMPLE_RATE)
    return Speech(audio, _shift(phones, offset, duration), _shift(words, offset, duration), span), dry


def _meta(speech: Speech) -> dict:
    return {
        "num_samples": int(speech.audio.size),
        "phones": speech.phones,
        "words": speech.words,
        "speech_span": [round(v, 4) for v in speech.speech_span],
    }


def job_single(syntheses: list[espeak.Synthesis], spec: UtteranceSpec, path: Path) -> dict:
    """One utterance written to `path`."""
    speech, _ = render_speech(spec, syntheses[0])
    save_audio(path, speech.audio, SAMPLE_RATE)
    return _meta(speech)


def job_accented(
    syntheses: list[espeak.Synthesis], spec: UtteranceSpec, reference: UtteranceSpec, path: Path
) -> dict:
    """One utterance by a voice of another language (`spec`, written to `path`) whose phone labels are those
    of `reference`, the same text read by an English voice: a foreign voice's phonemes have no faithful
    mapping onto the English phone set, and the words meant are the English ones. The audio's own phone
    alignment is therefore not known (`reference_phones` replaces `phones`); its word alignment is."""
    speech, _ = render_speech(spec, syntheses[0])
    save_audio(path, speech.audio, SAMPLE_RATE)
    phones, _ = _event_alignments(_label_text(reference), syntheses[1]) if reference.text else ([], [])
    return {**_meta(speech), "phones": [], "reference_phones": [p for p, _, _ in phones]}


def job_enhancement(
    syntheses: list[espeak.Synthesis], spec: UtteranceSpec, noisy_path: Path, clean_path: Path
) -> dict:
    """A noisy utterance and its clean reference (same samples without the background noise)."""
    speech, clean = render_speech(spec, syntheses[0])
    save_audio(noisy_path, speech.audio, SAMPLE_RATE)
    save_audio(clean_path, clean, SAMPLE_RATE)
    return _meta(speech)


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def job_separation(
    syntheses: list[espeak.Synthesis],
    specs: tuple[UtteranceSpec, UtteranceSpec],
    level_db: float,
    paths: tuple[Path, Path, Path],
) -> dict:
    """Two speakers mixed at `level_db` (source 2 relative to source 1); the mixture is exactly the sum
    of the two 16-bit sources as written."""
    first, _ = render_speech(specs[0], syntheses[0], background=False)
    second, _ = render_speech(specs[1], syntheses[1], background=False)
    length = max(first.audio.size, second.audio.size)
    s1 = np.pad(first.audio, (0, length - first.audio.size))
    s2 = np.pad(second.audio, (0, length - second.audio.size))
    s2 = s2 * np.sqrt(augment.signal_power(s1) / (augment.signal_power(s2) + 1e-12)) * 10 ** (level_db / 20)
    scale = min(1.0, 0.9 / float(np.max(np.abs(s1 + s2), initial=1e-9)))
    q1, q2 = _to_pcm16(s1 * scale), _to_pcm16(s2 * scale)
    mix = (q1.astype(np.int32) + q2.astype(np.int32)).astype(np.int16)  # |s1+s2| <= 0.9: no overflow
    for path, pcm in zip(paths, (mix, q1, q2)):
        save_audio(path, pcm, SAMPLE_RATE)
    return {"num_samples": int(length), "sources": [_meta(first), _meta(second)]}


def job_conversation(
    syntheses: list[espeak.Synthesis],
    specs: list[UtteranceSpec],
    gaps: list[float],
    snr: float | None,
    seed: int,
    path: Path,
) -> dict:
    """Turns placed one after another with pauses (gap > 0) or overlaps (gap < 0); returns each turn's
    speech interval, measured on the rendered samples."""
    rng = np.random.default_rng(seed)
    turns, position, pieces = [], 0.3, []
    for spec, synth, gap in zip(specs, syntheses, [0.0] + list(gaps)):
        speech, _ = render_speech(spec, synth, background=False)
        begin, end = speech.speech_span
        seg = speech.audio[int(round(begin * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
        previous_end = turns[-1]["end"] if turns else position
        start = max(previous_end + gap, turns[-1]["start"] + 0.2 if turns else position)
        pieces.append((int(round(start * SAMPLE_RATE)), seg))
        turns.append(
            {
                "speaker": spec.speaker.id,
                "text": spec.text,
                "start": round(start, 4),
                "end": round(start + seg.size / SAMPLE_RATE, 4),
            }
        )
    length = max(s + seg.size for s, seg in pieces) + int(0.3 * SAMPLE_RATE)
    audio = np.zeros(length, np.float32)
    for start, seg in pieces:
        audio[start : start + seg.size] += seg
    audio += rng.standard_normal(length).astype(np.float32) * 10.0 ** (rng.uniform(*_NOISE_FLOOR_DBFS) / 20)
    if snr is not None:
        speech_rms = np.sqrt(np.mean(np.concatenate([seg for _, seg in pieces]) ** 2))
        audio += (
            augment.coloured_noise(rng, length, float(rng.uniform(0.0, 2.0))) * speech_rms / 10 ** (snr / 20)
        )
    audio *= min(1.0, 0.95 / float(np.max(np.abs(audio), initial=1e-9)))
    save_audio(path, audio, SAMPLE_RATE)
    return {"num_samples": int(length), "turns": turns}

"""Non-speech sounds of the synthetic HEAR tasks, in plain numpy at 16 kHz: instrument notes by additive
synthesis (`instrument_note`) and the sound events of the event task (`event_sound`) over coloured noise.

Every parameter is drawn in the parent by `draw_instrument`/`draw_event` (so a task depends on its seed
alone) and rendered in a worker from plain dicts; the randomness of a rendering comes from its `seed`."""

from __future__ import annotations

import numpy as np

from speechrep.audio import augment

SAMPLE_RATE = 16000
_TOP_HZ = 7500.0  # partials stay below Nyquist (8 kHz): no aliasing

# Harmonic amplitude profiles, partial k = 1..K. The fundamental is never far below the strongest partial
# (≥ 0.5 of it before an instrument's tilt and jitter), so a note's lowest strong partial is its pitch.
PROFILES = ("saw", "square", "flute", "brass", "organ")
EVENT_KINDS = ("alarm", "burst", "chirp", "knock")


def _profile(name: str, k: np.ndarray) -> np.ndarray:
    if name == "saw":
        return 1.0 / k
    if name == "square":  # odd partials, a trace of even ones (a clarinet more than a square wave)
        return np.where(k % 2 == 1, 1.0 / k, 0.05 / k)
    if name == "flute":
        return k**-2.5
    if name == "brass":  # a broad peak around the third partial
        return k * np.exp(-k / 3.0) / (3.0 * np.exp(-1.0))
    drawbars = {1: 1.0, 2: 0.8, 3: 0.6, 4: 0.5, 6: 0.3, 8: 0.25}  # organ
    return np.array([drawbars.get(int(i), 0.0) for i in k])


def midi_hz(note: float) -> float:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def note_name(note: int) -> str:
    """`C4`, `F#3`, ... for a MIDI note number."""
    return ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")[note % 12] + str(note // 12 - 1)


def draw_instrument(rng: np.random.Generator, name: str) -> dict:
    """An instrument: a profile with a spectral tilt and per-partial jitter, an ADSR envelope, vibrato and a
    chorus (a second, slightly detuned oscillator)."""
    return {
        "name": name,
        "profile": PROFILES[int(rng.integers(len(PROFILES)))],
        "tilt": float(rng.uniform(-0.3, 0.3)),  # partial k scaled by k**tilt
        "jitter_db": rng.uniform(-3.0, 3.0, size=64).round(3).tolist(),
        "attack": float(rng.uniform(0.005, 0.08)),
        "decay": float(rng.uniform(0.05, 0.3)),
        "sustain": float(rng.uniform(0.3, 0.9)),
        "release": float(rng.uniform(0.05, 0.2)),
        "vibrato_hz": float(rng.uniform(4.0, 7.0)),
        "vibrato_cents": float(rng.uniform(0.0, 15.0)),
        "chorus_cents": float(rng.uniform(0.0, 8.0)),
        "chorus_gain": float(rng.uniform(0.0, 0.5)),
    }


def instrument_note(instrument: dict, note: int, detune_cents: float, gate: float, level_dbfs: float,
                    seed: int, duration: float = 1.0) -> np.ndarray:
    """One note: held for `gate` seconds then released, inside a clip of `duration` seconds, its RMS at
    `level_dbfs` over the sounding part, over a −70 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = midi_hz(note) * 2.0 ** (detune_cents / 1200.0)
    vibrato_phase = 2 * np.pi * instrument["vibrato_hz"] * t + rng.uniform(0, 6.3)
    vibrato = instrument["vibrato_cents"] * np.sin(vibrato_phase)
    phase = 2 * np.pi * np.cumsum(f0 * 2.0 ** (vibrato / 1200.0)) / SAMPLE_RATE
    k = np.arange(1, int(_TOP_HZ // (f0 * 1.02)) + 1, dtype=np.float64)
    jitter = np.asarray(instrument["jitter_db"], dtype=np.float64)[np.minimum(k, 64).astype(int) - 1]
    amplitudes = _profile(instrument["profile"], k) * k ** instrument["tilt"] * 10.0 ** (jitter / 20.0)
    x = np.zeros(n)
    for detune, gain in ((0.0, 1.0), (instrument["chorus_cents"], instrument["chorus_gain"])):
        if gain > 0:
            ratio = 2.0 ** (detune / 1200.0)
            partials = np.sin(k[:, None] * ratio * phase[None, :] + rng.uniform(0, 6.3, size=(len(k), 1)))
            x += gain * (amplitudes @ partials)
    x *= _adsr(instrument, gate, n)
    sounding = x[: int(round(min(gate + instrument["release"], duration) * SAMPLE_RATE))]
    x *= 10.0 ** (level_dbfs / 20.0) / np.sqrt(augment.signal_power(sounding) + 1e-12)
    return (x + rng.standard_normal(n) * 10.0 ** (-70.0 / 20.0)).astype(np.float32)


def _adsr(instrument: dict, gate: float, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    attack, decay, sustain, release = (instrument[key] for key in ("attack", "decay", "sustain", "release"))
    held = np.where(t < attack, t / attack, sustain + (1.0 - sustain) * np.exp(-(t - attack) / decay))
    at_gate = float(np.interp(gate, t, held))
    released = at_gate * np.exp(-(t - gate) / (release / 4.0))  # -35 dB after `release`
    return np.where(t < gate, held, released)


# ---------------------------------------------------------------------------------------- sound events

def draw_event(rng: np.random.Generator, kind: str) -> dict:
    """The parameters of one sound event of `kind` (EVENT_KINDS), its duration excluded."""
    if kind == "chirp":  # a sweep over at least an octave, up or down
        low = float(rng.uniform(300.0, 1500.0))
        high = low * 2.0 ** float(rng.uniform(1.0, 2.3))
        return {"kind": kind, "f": [low, high] if rng.random() < 0.5 else [high, low]}
    if kind == "knock":  # a train of damped resonant clicks
        return {"kind": kind, "rate_hz": float(rng.uniform(5.0, 12.0)), "f": float(rng.uniform(150.0, 700.0)),
                "decay_s": float(rng.uniform(0.01, 0.04))}
    if kind == "alarm":  # two alternating tones with partials 1, 3, 5 (the 5th stays below 7.5 kHz)
        f = float(rng.uniform(500.0, 1000.0))
        return {"kind": kind, "f": [f, f * float(rng.uniform(1.15, 1.4))],
                "rate_hz": float(rng.uniform(2.0, 6.0))}
    centre = float(rng.uniform(500.0, 5000.0))  # burst: band-passed noise, about an octave wide
    return {"kind": kind, "band": [centre / 2**0.5, min(centre * 2**0.5, 7800.0)]}


def event_sound(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of one event (unit power, 5 ms fades at both ends)."""
    t = np.arange(n) / SAMPLE_RATE
    kind = params["kind"]
    if kind == "chirp":
        f = params["f"][0] * (params["f"][1] / params["f"][0]) ** (t / t[-1])
        x = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)
    elif kind == "knock":
        since = t % (1.0 / params["rate_hz"])
        x = np.exp(-since / params["decay_s"]) * np.sin(2 * np.pi * params["f"] * since)
        x += 0.3 * np.exp(-since / 0.002) * rng.standard_normal(n)  # the strike
    elif kind == "alarm":
        which = (t * params["rate_hz"] % 1.0 < 0.5).astype(np.float64)
        f = np.where(which > 0, params["f"][0], params["f"][1])
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        x = np.sin(phase) + 0.5 * np.sin(3 * phase) + 0.25 * np.sin(5 * phase)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        x = np.fft.irfft(spectrum * ((freqs >= params["band"][0]) & (freqs <= params["band"][1])), n=n)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * SAMPLE_RATE))
    x = x * fade
    return x / np.sqrt(augment.signal_power(x) + 1e-12)


def event_scene(events: list[dict], background: dict, duration: float, seed: int) -> np.ndarray:
    """A clip: coloured noise (`background`: exponent, level_dbfs) plus each event (onset/offset in
    samples, its `snr_db` the power over its span against the background's)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * SAMPLE_RATE))
    noise_level = 10.0 ** (background["level_dbfs"] / 20.0)
    x = augment.coloured_noise(rng, n, background["exponent"]).astype(np.float64) * noise_level
    for event in events:
        a, b = event["onset"], event["offset"]
        x[a:b] += event_sound(event["params"], b - a, rng) * noise_level * 10.0 ** (event["snr_db"] / 20.0)
    peak = float(np.max(np.abs(x)))
    return (x * min(1.0, 0.9 / peak)).astype(np.float32)

"""Named distortion conditions for robustness tests, deterministic per utterance.

    cond = parse_condition("noise:snr=5,kind=pink")
    noisy = cond.apply(wav, "utt-001")           # the same id always gets the same noise
    conds = parse_conditions("clean,noise:snr=5,kind=white,reverb:rt60=0.8")

Grammar: `KIND[:key=value[,key=value...]]`; in a comma-separated list a `key=value` item without a colon
continues the condition before it. Kinds and their parameters (defaults in brackets):

    clean                                   the input, unchanged
    noise:snr=[10],kind=[pink]|white|brown  coloured noise (or exponent=E: a 1/f**E power spectrum; or
                                            dir=PATH: recorded noise, one of the folder's files, random start)
    babble:snr=[5],speakers=[3]             other utterances of the same split (other speakers first), summed
    reverb:rt60=[0.5],drr=[3]               a synthetic room impulse response (RT60 s, direct-to-reverb dB)
    telephone                               8 kHz, 300-3400 Hz, 8-bit µ-law round trip, back to the input rate
    clip:level=[0.3]                        hard clipping at level × the peak
    codec:format=[mp3]|vorbis,quality=[0.9] a lossy round trip through soundfile (quality = compression level)
    speed:factor=[1.1]                      faster and higher (Kaldi-style speed perturbation; changes length)
    pitch:semitones=[2]                     higher (lower if < 0) by that many semitones; same length, tempo
    dropout:rate=[0.1],chunk_ms=[20]        that share of chunks zeroed
    domain:name=NAME                        no distortion: the test split `test_NAME` of the same subset
                                            (out-of-domain test splits: `speechrep synth --domains`)

Random draws come from a generator seeded by (canonical spec, utterance id), so a cut gets the same
distortion in every run, process and order (`str(condition)` is the spec as written: the results key).
Every condition but `speed` keeps the length. `pitch` is a phase-vocoder time stretch then a resampling
back to the input length (librosa's `effects.pitch_shift` algorithm, vectorised; a test checks parity).
`domain` distorts nothing (`apply` refuses it): a benchmark tests the head on another split instead
(`Condition.test_split`), so it is a test condition only, never a training or analysis distortion.
Built on `speechrep.audio.augment`, the primitives pre-training's distorter uses.
"""
from __future__ import annotations

import functools
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import soxr

from speechrep.audio import augment
from speechrep.errors import ConfigError, SpeechrepError

NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III"), "vorbis": ("OGG", "VORBIS")}
# kind → parameter → default; the default's type is the parameter's type (str kinds list their choices)
PARAMETERS: dict[str, dict[str, float | str | None]] = {
    "clean": {},
    "noise": {"snr": 10.0, "kind": "pink", "exponent": None, "dir": None},
    "babble": {"snr": 5.0, "speakers": 3.0},
    "reverb": {"rt60": 0.5, "drr": 3.0},
    "telephone": {},
    "clip": {"level": 0.3},
    "codec": {"format": "mp3", "quality": 0.9},
    "speed": {"factor": 1.1},
    "pitch": {"semitones": 2.0},
    "dropout": {"rate": 0.1, "chunk_ms": 20.0},
    "domain": {"name": None},
}
_CHOICES = {("noise", "kind"): tuple(NOISE_EXPONENTS), ("codec", "format"): tuple(CODECS)}
# free-form parameters: a name or a path, not a number
_NAMES = {("domain", "name"): re.compile(r"[a-z0-9_]+"), ("noise", "dir"): re.compile(r"[^,:=\s]+")}
NOISE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# another utterance for babble: (id, speaker or None, audio loader)
Other = tuple[str, str | None, Callable[[], np.ndarray]]


@dataclass(frozen=True)
class Condition:
    """One parsed condition: its kind and every parameter (defaults filled in)."""

    kind: str
    params: tuple[tuple[str, float | str | None], ...]
    name: str = field(default="", compare=False)  # the spec as written (the results.json key)

    @property
    def spec(self) -> str:
        """The canonical spec (the seed): every parameter that is set, defaults included, sorted by name."""
        items = [f"{k}={_fmt(v)}" for k, v in self.params if v is not None]
        return self.kind + (":" + ",".join(items) if items else "")

    def __str__(self) -> str:
        return self.name or self.spec

    def param(self, name: str) -> float | str | None:
        """The value of one parameter."""
        return dict(self.params)[name]

    @property
    def is_clean(self) -> bool:
        """Whether this condition leaves audio unchanged."""
        return self.kind == "clean"

    @property
    def test_split(self) -> str:
        """The split a benchmark tests under this condition: `test`, or `test_<name>` for `domain`."""
        return f"test_{self.param('name')}" if self.kind == "domain" else "test"

    def rng(self, utterance_id: str) -> np.random.Generator:
        """The generator of this condition for one utterance: seeded from (spec, id)."""
        digest = hashlib.sha256(f"{self.spec}\0{utterance_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def apply(self, wav: np.ndarray, utterance_id: str, sample_rate: int = 16000,
              others: Sequence[Other] | None = None) -> np.ndarray:
        """The distorted copy of a 1-D float signal (float32); `others`: the split's utterances (babble)."""
        if self.kind == "domain":
            raise SpeechrepError(f"condition {self}: a domain names the test split {self.test_split}, "
                                 "it does not distort audio")
        x = np.asarray(wav, dtype=np.float32)
        p = dict(self.params)
        if self.kind == "clean" or x.size == 0:
            return x.copy()
        rng = self.rng(utterance_id)
        if self.kind == "noise":
            if p["dir"] is not None:
                files = noise_files(str(p["dir"]))
                recorded = _noise_recording(files[int(rng.integers(len(files)))], sample_rate)
                noise = np.roll(recorded, int(rng.integers(recorded.size)))  # tiled by add_noise
            else:
                exponent = p["exponent"] if p["exponent"] is not None else NOISE_EXPONENTS[str(p["kind"])]
                noise = augment.coloured_noise(rng, x.size, exponent=float(exponent))
            return augment.add_noise(x, noise, float(p["snr"])).astype(np.float32)
        if self.kind == "babble":
            return augment.add_noise(x, _babble(x.size, utterance_id, int(p["speakers"]), rng, others,
                                                self.spec), float(p["snr"])).astype(np.float32)
        if self.kind == "reverb":
            rir = augment.synthetic_rir(rng, sample_rate, rt60=float(p["rt60"]),
                                        direct_to_reverb_db=float(p["drr"]))
            return augment.reverberate(x, rir)
        if self.kind == "telephone":
            return _telephone(x, sample_rate)
        if self.kind == "clip":
            return augment.clip(x, float(p["level"])).astype(np.float32)
        if self.kind == "codec":
            return _codec(x, sample_rate, str(p["format"]), float(p["quality"]))
        if self.kind == "speed":
            return augment.speed_perturb(x, float(p["factor"]), sample_rate)
        if self.kind == "pitch":
            return pitch_shift(x, sample_rate, float(p["semitones"]))
        if self.kind == "dropout":
            chunk = max(1, int(round(float(p["chunk_ms"]) * sample_rate / 1000.0)))
            dropped = rng.random(-(-x.size // chunk)) < float(p["rate"])
            return np.where(np.repeat(dropped, chunk)[: x.size], np.float32(0.0), x)
        raise AssertionError(self.kind)  # parse_condition admits only the kinds above


def _fmt(value: float | str | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_condition(spec: str, what: str = "test condition") -> Condition:
    """`KIND[:key=value,...]` → Condition; a one-line ConfigError (naming `what`) for an unknown kind, key
    or value."""
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in PARAMETERS:
        raise ConfigError(f"{what} {spec!r}: unknown kind {kind!r} (known: {', '.join(PARAMETERS)})")
    known = PARAMETERS[kind]
    values = dict(known)
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, eq, raw = (s.strip() for s in item.partition("="))
        if key not in known:
            expected = ", ".join(known) or "none"
            raise ConfigError(f"{what} {spec!r}: unknown parameter {key!r} for {kind} "
                              f"(expected: {expected})")
        if not eq or not raw:
            raise ConfigError(f"{what} {spec!r}: parameter {key!r} needs a value ({key}=...)")
        choices = _CHOICES.get((kind, key))
        if choices is not None:
            if raw not in choices:
                raise ConfigError(f"{what} {spec!r}: {key}={raw!r}: expected one of "
                                  f"{', '.join(choices)}")
            values[key] = raw
            continue
        pattern = _NAMES.get((kind, key))
        if pattern is not None:
            if not pattern.fullmatch(raw):
                raise ConfigError(f"{what} {spec!r}: {key}={raw!r}: expected " + (
                "a folder path without , : = or spaces" if key == "dir" else
                "a name of lowercase letters, digits and _"))
            values[key] = raw
            continue
        try:
            number = float(raw)
        except ValueError:
            raise ConfigError(f"{what} {spec!r}: {key}={raw!r} is not a number") from None
        if not np.isfinite(number):
            raise ConfigError(f"{what} {spec!r}: {key}={raw!r} must be finite")
        values[key] = number
    if kind == "noise" and values["exponent"] is not None and "kind=" in rest:
        raise ConfigError(f"{what} {spec!r}: give kind= or exponent=, not both")
    if kind == "noise" and values["exponent"] is not None:
        values["kind"] = None  # the exponent alone names the colour
    if kind == "noise" and values["dir"] is not None:
        if "kind=" in rest or values["exponent"] is not None:
            raise ConfigError(f"{what} {spec!r}: recorded noise (dir=) has no colour; drop kind=/exponent=")
        values["kind"] = None
        try:
            noise_files(str(values["dir"]))
        except SpeechrepError as error:
            raise ConfigError(f"{what} {spec!r}: {error}") from None
    if kind == "domain" and values["name"] is None:
        raise ConfigError(f"{what} {spec!r}: domain needs name=... (the split test_<name>; e.g. "
                          "domain:name=fast)")
    _check_range(spec, kind, values, what)
    return Condition(kind, tuple(sorted(values.items())), name=text)


@functools.lru_cache(maxsize=8)
def noise_files(folder: str) -> tuple[str, ...]:
    """The audio files of a noise folder (recursively, sorted); a SpeechrepError when there are none."""
    root = Path(folder)
    files = tuple(sorted(str(f) for f in root.rglob("*") if f.suffix.lower() in NOISE_SUFFIXES)) \
        if root.is_dir() else ()
    if not files:
        raise SpeechrepError(f"noise folder {folder!r} holds no {'/'.join(NOISE_SUFFIXES)} file"
                             if root.is_dir() else f"noise folder {folder!r} does not exist")
    return files


@functools.lru_cache(maxsize=64)
def _noise_recording(path: str, sample_rate: int) -> np.ndarray:
    from speechrep.audio.io import load_audio

    return load_audio(path, sample_rate)[0].numpy()


def _check_range(spec: str, kind: str, v: dict[str, float | str | None], what: str) -> None:
    bad = None
    if kind == "clip" and not 0.0 < float(v["level"]) <= 1.0:
        bad = "level must be in (0, 1]"
    elif kind == "speed" and float(v["factor"]) <= 0:
        bad = "factor must be positive"
    elif kind == "pitch" and not -24.0 <= float(v["semitones"]) <= 24.0:
        bad = "semitones must be in [-24, 24] (two octaves)"
    elif kind == "reverb" and float(v["rt60"]) < 0.05:
        bad = "rt60 must be at least 0.05 s (the synthetic room's early reflections need that long)"
    elif kind == "dropout" and (not 0.0 <= float(v["rate"]) <= 1.0 or float(v["chunk_ms"]) <= 0):
        bad = "rate must be in [0, 1] and chunk_ms positive"
    elif kind == "codec" and not 0.0 <= float(v["quality"]) <= 1.0:
        bad = "quality must be in [0, 1]"
    elif kind == "babble" and (float(v["speakers"]) < 1 or float(v["speakers"]) != int(float(v["speakers"]))):
        bad = "speakers must be a whole number >= 1"
    if bad:
        raise ConfigError(f"{what} {spec!r}: {bad}")


def split_condition_list(text: str) -> list[str]:
    """`clean,noise:snr=5,kind=white,reverb:rt60=0.8` → [clean, noise:snr=5,kind=white, reverb:rt60=0.8]:
    an item with `=` but no `:` continues the condition before it."""
    specs: list[str] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and specs:
            specs[-1] += ("," if ":" in specs[-1] else ":") + item
        else:
            specs.append(item)
    return specs


def parse_conditions(text: str | Sequence[str], what: str = "test conditions") -> list[Condition]:
    """A comma-separated list (or a list of specs) → Conditions; a ConfigError for bad ones or repeats."""
    specs = split_condition_list(text) if isinstance(text, str) else list(text)
    if not specs:
        raise ConfigError(f"{what}: none given (e.g. clean,noise:snr=5)")
    conditions = [parse_condition(s, what.removesuffix("s")) for s in specs]
    names = [c.spec for c in conditions]  # "noise" and "noise:snr=10" are the same condition
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} {','.join(specs)!r}: a condition is named twice")
    return conditions


def distortions_only(conditions: Sequence[Condition], what: str) -> None:
    """A one-line ConfigError if one of `conditions` is a `domain` (a test split, not a distortion): for
    training and analysis, which need audio to distort."""
    for condition in conditions:
        if condition.kind == "domain":
            raise ConfigError(f"{what}: {str(condition)!r} names the test split {condition.test_split}, not "
                              "a distortion; domain conditions are test conditions only (--test-conditions)")


def draw_condition(conditions: Sequence[Condition], utterance_id: str, seed: int = 0,
                   epoch: int = 0) -> Condition:
    """One of `conditions` for an utterance in one training epoch, uniformly, seeded by (seed, epoch, id):
    distorted training draws each cut's condition anew every epoch, the same in every run and process."""
    if not conditions:
        raise SpeechrepError("draw_condition: no conditions to draw from")
    digest = hashlib.sha256(f"{seed}\0{epoch}\0{utterance_id}".encode()).digest()
    return conditions[int.from_bytes(digest[:8], "little") % len(conditions)]


# --------------------------------------------------------------------------------------------- the kinds

def _babble(num_samples: int, utterance_id: str, speakers: int, rng: np.random.Generator,
            others: Sequence[Other] | None, spec: str) -> np.ndarray:
    """`speakers` other utterances (other speakers first), each at unit power, randomly offset and summed."""
    pool = [o for o in (others or ()) if o[0] != utterance_id]
    if not pool:
        raise SpeechrepError(f"condition {spec!r}: babble needs other utterances of the split")
    own = next((o[1] for o in (others or ()) if o[0] == utterance_id), None)
    order = rng.permutation(len(pool))
    # other speakers first, then the same speaker's other utterances, in a seeded order
    ranked = sorted(order.tolist(), key=lambda i: own is not None and pool[i][1] == own)
    mix = np.zeros(num_samples, dtype=np.float64)
    for i in ranked[:speakers]:
        audio = np.asarray(pool[i][2](), dtype=np.float64).reshape(-1)
        if audio.size == 0:
            continue
        audio = np.roll(np.tile(audio, -(-num_samples // audio.size))[:num_samples],
                        int(rng.integers(num_samples)))
        mix += audio / np.sqrt(augment.signal_power(audio) + 1e-12)
    return mix.astype(np.float32)


def _mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """An 8-bit µ-law encode/decode round trip of a signal in [-1, 1]."""
    x = np.clip(x, -1.0, 1.0)
    encoded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round((encoded + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0
    return np.sign(quantised) * ((1.0 + mu) ** np.abs(quantised) - 1.0) / mu


def _fit(y: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length` samples."""
    return np.pad(y[:length], (0, max(0, length - y.size))).astype(np.float32)


def _telephone(x: np.ndarray, sample_rate: int) -> np.ndarray:
    narrow = soxr.resample(x, sample_rate, 8000, quality="HQ") if sample_rate != 8000 else x
    narrow = augment.band_limit(narrow.astype(np.float32), 8000, 300.0, 3400.0)
    narrow = _mu_law(narrow.astype(np.float64)).astype(np.float32)
    wide = soxr.resample(narrow, 8000, sample_rate, quality="HQ") if sample_rate != 8000 else narrow
    return _fit(wide, x.size)


def _codec(x: np.ndarray, sample_rate: int, name: str, quality: float) -> np.ndarray:
    fmt, subtype = CODECS[name]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype,
             compression_level=quality)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32", always_2d=False)
    return _fit(np.asarray(decoded).reshape(-1), x.size)


# pitch shift: STFT sizes for 16 kHz speech (64 ms windows, 16 ms hop), scaled with the sample rate
PITCH_FFT_SECONDS = 0.064


def _stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """(bins, frames) of a zero-padded, centred STFT (librosa's `stft(center=True, pad_mode="constant")`)."""
    padded = np.pad(x.astype(np.float64), (n_fft // 2, n_fft // 2))
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * window, axis=1).T


def _istft(spec: np.ndarray, n_fft: int, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add of a centred STFT back to `length` samples (librosa's `istft(length=)`)."""
    frames = min(spec.shape[1], -(-(length + 2 * (n_fft // 2)) // hop))
    chunks = np.fft.irfft(spec[:, :frames].T, n=n_fft, axis=1) * window
    total = n_fft + hop * (frames - 1)
    index = (np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]).reshape(-1)
    y = np.bincount(index, weights=chunks.reshape(-1), minlength=total)
    norm = np.bincount(index, weights=np.tile(window ** 2, frames), minlength=total)
    nonzero = norm > np.finfo(np.float64).tiny
    y[nonzero] /= norm[nonzero]
    y = y[n_fft // 2:]
    return np.pad(y[:length], (0, max(0, length - y.size)))


def _phase_vocoder(spec: np.ndarray, rate: float, hop: int) -> np.ndarray:
    """Time-stretch an STFT by `rate` (> 1: faster), frames interpolated in magnitude, phases advanced by
    each bin's instantaneous frequency (librosa's `phase_vocoder`, as one cumulative sum)."""
    steps = np.arange(0, spec.shape[1], rate, dtype=np.float64)
    padded = np.pad(spec, ((0, 0), (0, 2)))
    left, alpha = steps.astype(np.int64), np.mod(steps, 1.0)
    a, b = padded[:, left], padded[:, left + 1]
    mag = (1.0 - alpha) * np.abs(a) + alpha * np.abs(b)
    expected = hop * np.linspace(0, np.pi, spec.shape[0])[:, None]  # each bin's phase advance per hop
    dphase = np.angle(b) - np.angle(a) - expected
    dphase -= 2.0 * np.pi * np.round(dphase / (2.0 * np.pi))
    advance = np.cumsum(expected + dphase, axis=1)
    phase = np.angle(spec[:, :1]) + np.concatenate([np.zeros((spec.shape[0], 1)), advance[:, :-1]], axis=1)
    return mag * np.exp(1j * phase)


def pitch_shift(x: np.ndarray, sample_rate: int, semitones: float, n_fft: int | None = None,
                hop: int | None = None) -> np.ndarray:
    """`x` shifted by `semitones` with its length and tempo kept: stretched in time by 2**(semitones/12)
    with a phase vocoder, then resampled back to the input length (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0 or semitones == 0:
        return x.copy()
    n_fft = n_fft or 2 ** int(round(np.log2(PITCH_FFT_SECONDS * sample_rate)))
    hop = hop or n_fft // 4
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    rate = 2.0 ** (-semitones / 12.0)
    stretched = _istft(_phase_vocoder(_stft(x, n_fft, hop, window), rate, hop), n_fft, hop, window,
                       int(round(x.size / rate)))
    shifted = soxr.resample(stretched.astype(np.float32), sample_rate / rate, sample_rate, quality="HQ")
    return _fit(np.asarray(shifted), x.size)

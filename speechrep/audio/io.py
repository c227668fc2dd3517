"""Audio file I/O: load (any soundfile format, mono float32, resampled), save atomically, inspect, resample."""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr
import torch

from speechrep.errors import AudioError
from speechrep.storage import atomic_write, disk_errors

AudioSource = Union[str, os.PathLike, BinaryIO]
ArrayLike = Union[np.ndarray, torch.Tensor]

# suffix -> (soundfile container format, default subtype)
_FORMATS_BY_SUFFIX: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says about its audio, read without decoding the samples."""

    sample_rate: int
    num_frames: int
    num_channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def _name(source: AudioSource) -> str:
    """A printable name for a path or a file object."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<in-memory audio>"))


def _check_exists(source: AudioSource) -> None:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{path}: file not found")
        if path.is_dir():
            raise AudioError(f"{path}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: empty file (zero bytes)")


def _wav_declares_more_than_present(source: AudioSource) -> bool:
    """True when a RIFF/WAVE header announces more bytes than the file holds (libsndfile reads it silently).

    A file object is read from its current position (where the audio starts) and left there."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _wav_declares_more_than_present(f)
    if not (hasattr(source, "seek") and hasattr(source, "tell")):
        return False  # a pipe: its size is unknown until read
    start = source.tell()
    try:
        header = source.read(12)
        end = source.seek(0, os.SEEK_END)
    finally:
        source.seek(start)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return False
    (riff_size,) = struct.unpack("<I", header[4:8])
    # Streaming writers leave 0 or 0xFFFFFFFF when the size is unknown: nothing to compare against.
    if riff_size in (0, 0xFFFFFFFF):
        return False
    return riff_size + 8 > end - start


def audio_info(source: AudioSource) -> AudioInfo:
    """Sample rate, frames, channels and format of an audio file, without decoding it."""
    _check_exists(source)
    start = source.tell() if hasattr(source, "tell") else None
    try:
        info = sf.info(source)
    except sf.SoundFileError as err:
        raise AudioError(f"{_name(source)}: not a readable audio file ({_one_line(err)})") from None
    finally:
        if start is not None:
            source.seek(start)  # leave a file object where the caller had it, so it can still be decoded
    return AudioInfo(
        sample_rate=int(info.samplerate),
        num_frames=int(info.frames),
        num_channels=int(info.channels),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _one_line(err: BaseException) -> str:
    # libsndfile errors repeat the path in str(err); error_string holds just the reason.
    reason = getattr(err, "error_string", None) or str(err)
    return " ".join(str(reason).split()).rstrip(".")


def resample(wav: ArrayLike, orig_sample_rate: int, new_sample_rate: int) -> torch.Tensor:
    """Resample a 1-D (time) or 2-D (channels, time) signal with soxr; returns float32 torch on the input device."""
    if orig_sample_rate <= 0 or new_sample_rate <= 0:
        raise AudioError(f"resample: sample rates must be positive, got {orig_sample_rate} -> {new_sample_rate}")
    device = wav.device if isinstance(wav, torch.Tensor) else torch.device("cpu")
    array = _to_numpy(wav)
    if orig_sample_rate == new_sample_rate:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)
    # soxr wants (time, channels)
    out = soxr.resample(array.T, orig_sample_rate, new_sample_rate, quality="HQ").T
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(device)


def _to_numpy(wav: ArrayLike, name: str = "<in-memory audio>") -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        if wav.is_complex() or wav.dtype == torch.bool:
            raise AudioError(f"{name}: expected real-valued audio samples, got a {wav.dtype} tensor")
        wav = wav.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(wav)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)) \
            or array.dtype == np.bool_:
        raise AudioError(f"{name}: expected float or integer PCM samples, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        # Integer PCM: scale by the type's full range so the result lies in [-1, 1].
        array = array.astype(np.float32) / float(-np.iinfo(array.dtype).min)
    return array.astype(np.float32, copy=False)


MAX_CHANNELS = 32  # more than this along the shorter axis of an in-memory signal is not a channel axis


def _mix_to_mono(array: np.ndarray, name: str) -> np.ndarray:
    """Mean over channels; arrays are (time,) or (time, channels) as soundfile returns them."""
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        return array.mean(axis=1, dtype=np.float32)
    raise AudioError(f"{name}: expected 1-D or 2-D audio, got shape {tuple(array.shape)}")


def _time_first(array: np.ndarray, name: str) -> np.ndarray:
    """An in-memory signal as (time,) or (time, channels): the channel axis is the shorter one.

    Both (2, 16000) and (16000, 2) are two channels: channels are few and samples many. A 2-D signal
    whose shorter side exceeds MAX_CHANNELS, or whose sides are equal, cannot be told apart: AudioError.
    """
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise AudioError(f"{name}: expected (time,), (channels, time) or (time, channels) audio, "
                         f"got shape {tuple(array.shape)}")
    rows, cols = array.shape
    if array.size == 0:
        raise AudioError(f"{name}: zero-length audio (shape {tuple(array.shape)})")
    if rows == cols or min(rows, cols) > MAX_CHANNELS:
        raise AudioError(f"{name}: cannot tell channels from time in shape {tuple(array.shape)} "
                         f"(channels must be the shorter axis, at most {MAX_CHANNELS})")
    return array.T if rows < cols else array


def _validate_samples(mono: np.ndarray, name: str) -> None:
    if mono.size == 0:
        raise AudioError(f"{name}: zero-length audio (no samples)")
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise AudioError(f"{name}: {bad} NaN/Inf samples")


def _read_file(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (time, channels) in [-1, 1], rejecting truncated or unreadable files."""
    name = _name(source)
    info = audio_info(source)
    if _wav_declares_more_than_present(source):
        raise AudioError(f"{name}: truncated file (WAV header announces more data than the file holds)")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except sf.SoundFileError as err:
        raise AudioError(f"{name}: corrupt or truncated audio ({_one_line(err)})") from None
    if info.num_frames == 0 or data.shape[0] == 0:
        raise AudioError(f"{name}: zero-length audio (no samples)")
    if data.shape[0] < info.num_frames:
        raise AudioError(
            f"{name}: truncated file (header announces {info.num_frames} frames, decoded {data.shape[0]})"
        )
    return data, int(rate)


def load_audio(
    source: AudioSource | ArrayLike,
    sample_rate: int | None = 16000,
    *,
    source_sample_rate: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Load audio as a float32 mono 1-D tensor at `sample_rate` (None keeps the source's rate).

    `source` is a path, a binary file object, or an in-memory numpy/torch signal shaped (time,),
    (channels, time) or (time, channels) — the shorter axis is the channels (see `_time_first`) — whose
    rate is given by `source_sample_rate`. Raises AudioError naming the source and the problem for
    missing, non-audio, empty, truncated, NaN/Inf, wrongly typed or wrongly shaped input.
    """
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
        raise AudioError(f"{_name(source) if not isinstance(source, (np.ndarray, torch.Tensor)) else 'audio'}: "
                         f"sample_rate must be a positive integer or None, got {sample_rate!r}")
    if isinstance(source, (np.ndarray, torch.Tensor)):
        name = "<in-memory audio>"
        if source_sample_rate is None:
            raise AudioError(f"{name}: source_sample_rate is required for numpy/torch input")
        if isinstance(source_sample_rate, bool) or not float(source_sample_rate).is_integer() \
                or source_sample_rate <= 0:
            raise AudioError(f"{name}: source_sample_rate must be a positive integer, got {source_sample_rate!r}")
        data, rate = _time_first(_to_numpy(source, name), name), int(source_sample_rate)
    elif isinstance(source, (str, os.PathLike)) or hasattr(source, "read"):
        name = _name(source)
        _check_exists(source)
        data, rate = _read_file(source)
    else:
        raise AudioError(f"load_audio: expected a path, a binary file object or a numpy/torch signal, "
                         f"got {type(source).__name__}")
    mono = _mix_to_mono(data, name)
    _validate_samples(mono, name)
    wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if sample_rate is not None and sample_rate != rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate


def save_audio(path: str | os.PathLike, wav: ArrayLike, sample_rate: int, subtype: str | None = None) -> Path:
    """Write audio atomically (temporary file, then rename); the format follows the suffix.

    `wav` is (time,) or (channels, time), float in [-1, 1] or integer PCM. Supported suffixes:
    .wav, .flac, .ogg, .opus, .mp3. `subtype` overrides the default encoding (e.g. "FLOAT", "PCM_24").
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS_BY_SUFFIX:
        raise AudioError(f"{path}: unsupported audio suffix {suffix!r} (use one of {sorted(_FORMATS_BY_SUFFIX)})")
    container, default_subtype = _FORMATS_BY_SUFFIX[suffix]
    array = _to_numpy(wav)
    if array.ndim == 2:
        array = array.T  # soundfile writes (time, channels)
    elif array.ndim != 1:
        raise AudioError(f"{path}: expected (time,) or (channels, time) audio, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise AudioError(f"{path}: refusing to write zero-length audio")
    if not np.isfinite(array).all():
        raise AudioError(f"{path}: refusing to write NaN/Inf samples")
    # Encoded in memory first, so that a full disk is an OSError with its errno (libsndfile only says
    # "System error") and surfaces as disk_errors' one-line OutputError.
    buffer = io.BytesIO()
    try:
        sf.write(buffer, array, sample_rate, format=container, subtype=subtype or default_subtype)
    except (sf.SoundFileError, ValueError, TypeError) as err:
        raise AudioError(f"{path}: cannot write audio ({_one_line(err)})") from None
    with disk_errors(path):
        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return path

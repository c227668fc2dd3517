"""load_audio / save_audio / audio_info / resample on real files written with soundfile."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechrep.audio import audio_info, load_audio, resample, save_audio
from speechrep.errors import AudioError

RATE = 16000


def _tone(freq: float = 440.0, seconds: float = 0.5, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_frequency(wav: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * rate / len(wav))


@pytest.mark.parametrize(
    "suffix, fmt, subtype, tolerance",
    [
        (".wav", "WAV", "PCM_16", 1 / 32768),
        (".wav", "WAV", "PCM_32", 1e-7),
        (".wav", "WAV", "FLOAT", 0.0),
        (".flac", "FLAC", "PCM_16", 1 / 32768),
        (".flac", "FLAC", "PCM_24", 1 / 2**23),
    ],
)
def test_lossless_formats_round_trip(tmp_path: Path, suffix: str, fmt: str, subtype: str, tolerance: float) -> None:
    signal = _tone()
    path = tmp_path / f"tone{suffix}"
    sf.write(path, signal, RATE, format=fmt, subtype=subtype)
    wav, rate = load_audio(path)
    assert rate == RATE and wav.dtype == torch.float32 and wav.shape == (len(signal),)
    assert np.abs(wav.numpy() - signal).max() <= tolerance + 1e-7


def test_integer_pcm_is_scaled_to_unit_range(tmp_path: Path) -> None:
    samples = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    path = tmp_path / "ints.wav"
    sf.write(path, samples, RATE, subtype="PCM_16")
    wav, _ = load_audio(path, sample_rate=None)
    np.testing.assert_allclose(wav.numpy(), samples / 32768.0, atol=0)


@pytest.mark.parametrize("suffix, fmt, subtype", [(".ogg", "OGG", "VORBIS"), (".mp3", "MP3", "MPEG_LAYER_III")])
def test_lossy_formats_keep_the_tone(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    signal = _tone(freq=1000.0, seconds=1.0)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, signal, RATE, format=fmt, subtype=subtype)
    wav, rate = load_audio(path)
    assert rate == RATE
    # Codecs add a delay: compare length loosely, frequency and level tightly.
    assert abs(len(wav) - len(signal)) < 0.1 * RATE
    assert abs(_dominant_frequency(wav.numpy(), rate) - 1000.0) <= 2.0
    rms = float(wav.square().mean().sqrt())
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_multichannel_is_mixed_to_mono_by_mean(tmp_path: Path) -> None:
    left, right = _tone(300.0), _tone(700.0, amplitude=0.25)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), RATE, subtype="PCM_24")
    wav, _ = load_audio(path)
    np.testing.assert_allclose(wav.numpy(), (left + right) / 2, atol=2 / 2**23)
    assert audio_info(path).num_channels == 2


def test_resampling_8k_to_16k_keeps_the_frequency(tmp_path: Path) -> None:
    signal = _tone(freq=1000.0, seconds=1.0, rate=8000)
    path = tmp_path / "narrowband.wav"
    sf.write(path, signal, 8000, subtype="FLOAT")
    wav, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and len(wav) == 16000
    assert _dominant_frequency(wav.numpy(), rate) == pytest.approx(1000.0, abs=1.0)
    # An upsampled sine is still a sine of the same level (away from the filter's edge effects).
    expected = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(16000) / 16000)
    assert np.abs(wav.numpy()[800:-800] - expected[800:-800]).max() < 1e-3


def test_sample_rate_none_keeps_the_file_rate(tmp_path: Path) -> None:
    path = tmp_path / "tone22k.wav"
    sf.write(path, _tone(rate=22050), 22050)
    wav, rate = load_audio(path, sample_rate=None)
    assert rate == 22050 and len(wav) == 11025


def test_resample_accepts_tensors_and_channels() -> None:
    stereo = torch.from_numpy(np.stack([_tone(500.0, rate=48000), _tone(900.0, rate=48000)]))
    out = resample(stereo, 48000, 16000)
    assert out.shape == (2, 8000) and out.dtype == torch.float32
    assert _dominant_frequency(out[1].numpy(), 16000) == pytest.approx(900.0, abs=2.0)


def test_in_memory_sources(tmp_path: Path) -> None:
    samples = (_tone() * 32767).astype(np.int16)
    wav, rate = load_audio(samples, sample_rate=None, source_sample_rate=RATE)
    np.testing.assert_allclose(wav.numpy(), samples / 32768.0)
    wav, rate = load_audio(torch.from_numpy(_tone(rate=8000)), sample_rate=RATE, source_sample_rate=8000)
    assert rate == RATE and len(wav) == 8000
    buffer = io.BytesIO()
    sf.write(buffer, _tone(), RATE, format="FLAC")
    buffer.seek(0)
    wav, _ = load_audio(buffer)
    assert np.abs(wav.numpy() - _tone()).max() < 1e-4
    with pytest.raises(AudioError, match="source_sample_rate"):
        load_audio(_tone())


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_save_audio_round_trip_and_info(tmp_path: Path, suffix: str) -> None:
    signal = torch.from_numpy(_tone(seconds=0.25))
    path = save_audio(tmp_path / "sub" / f"out{suffix}", signal, RATE)
    assert path.exists() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    info = audio_info(path)
    assert (info.sample_rate, info.num_channels, info.num_frames) == (RATE, 1, 4000)
    assert info.duration == pytest.approx(0.25)
    wav, _ = load_audio(path)
    tolerance = 0.05 if suffix == ".ogg" else 1 / 32768
    assert np.abs(wav.numpy() - signal.numpy()).max() <= tolerance


def test_save_audio_is_atomic_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "keep.wav"
    save_audio(path, _tone(), RATE)
    before = path.read_bytes()
    with pytest.raises(AudioError, match="keep.wav"):
        save_audio(path, _tone(), RATE, subtype="NOT_A_SUBTYPE")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_save_audio_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"out\.xyz.*suffix"):
        save_audio(tmp_path / "out.xyz", _tone(), RATE)
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "nan.wav", np.array([0.0, np.nan], dtype=np.float32), RATE)


def _truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {"missing": (tmp_path / "missing.wav", "not found")}
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all, just some text in a file")
    cases["not audio"] = (text, "not a readable audio file")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    cases["empty file"] = (empty, "empty file")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), RATE)
    cases["zero length"] = (zero, "zero-length")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, np.inf, 0.2], dtype=np.float32), RATE, subtype="FLOAT")
    cases["nan"] = (nan, "2 NaN/Inf samples")
    for suffix, fmt, subtype in [(".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".mp3", "MP3", None)]:
        whole = tmp_path / f"whole{suffix}"
        sf.write(whole, _tone(seconds=1.0), RATE, format=fmt, subtype=subtype)
        cases[f"truncated {suffix}"] = (_truncated_copy(whole, tmp_path / f"cut{suffix}"), "truncated")
    return cases


@pytest.mark.parametrize(
    "case", ["missing", "not audio", "empty file", "zero length", "nan", "truncated .wav", "truncated .flac",
             "truncated .mp3"]
)
def test_bad_input_raises_one_line_audio_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path, problem = _bad_inputs(tmp_path)[case]
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_audio_info_reads_headers_only(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros((48000 * 3, 2), dtype=np.float32), 48000)
    info = audio_info(path)
    assert (info.sample_rate, info.num_channels, info.num_frames, info.format) == (48000, 2, 144000, "FLAC")
    assert info.duration == pytest.approx(3.0)
    with pytest.raises(AudioError, match="not found"):
        audio_info(tmp_path / "nope.wav")


@pytest.mark.parametrize("case", ["not audio", "zero length", "nan", "truncated .wav", "truncated .flac"])
def test_a_file_object_is_checked_exactly_like_its_path(tmp_path: Path, case: str) -> None:
    path, problem = _bad_inputs(tmp_path)[case]
    with open(path, "rb") as f, pytest.raises(AudioError) as caught:
        load_audio(f)
    assert problem in str(caught.value) and str(path) in str(caught.value)
    if case == "truncated .wav":  # the WAV header check reads from where the caller left the stream
        buffer = io.BytesIO(b"junk before " + path.read_bytes())
        buffer.seek(len(b"junk before "))
        with pytest.raises(AudioError, match=problem):
            load_audio(buffer)


def test_a_whole_wav_file_object_loads_and_stays_readable_from_its_position(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _tone(), RATE, format="WAV")
    buffer.seek(0)
    wav, _ = load_audio(buffer)
    assert np.abs(wav.numpy() - _tone()).max() < 1e-4


@pytest.mark.parametrize("layout", ["channels-first", "time-first"])
def test_in_memory_stereo_is_mixed_over_its_channels_whichever_axis_they_are(layout: str) -> None:
    left, right = _tone(440.0), _tone(660.0)
    stereo = np.stack([left, right]) if layout == "channels-first" else np.stack([left, right], axis=1)
    for signal in (stereo, torch.from_numpy(stereo)):
        wav, _ = load_audio(signal, sample_rate=None, source_sample_rate=RATE)
        assert wav.shape == (len(left),)
        np.testing.assert_allclose(wav.numpy(), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize(
    "signal, problem",
    [
        (np.zeros((0,), np.float32), "zero-length"),
        (np.zeros((2, 0), np.float32), "zero-length"),
        (np.zeros((64, 64), np.float32), "cannot tell channels"),
        (np.zeros((40, 16000), np.float32), "cannot tell channels"),
        (np.zeros((1, 2, 16000), np.float32), "got shape"),
        (np.array(0.5, np.float32), "got shape"),
        (np.array([0.1, np.nan, 0.2], np.float32), "1 NaN/Inf"),
        (torch.tensor([0.1, float("inf")]), "1 NaN/Inf"),
        (np.array(["a", "b"]), "dtype"),
        (np.array([True, False]), "dtype"),
        (torch.zeros(8, dtype=torch.complex64), "real-valued"),
    ],
)
def test_bad_in_memory_signals_raise_one_line_audio_errors(signal, problem: str) -> None:
    with pytest.raises(AudioError, match=problem) as caught:
        load_audio(signal, source_sample_rate=RATE)
    assert "<in-memory audio>" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("rate", [0, -16000, 1.5, float("nan")])
def test_bad_sample_rates_are_audio_errors(rate) -> None:
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(_tone(), source_sample_rate=rate)
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(_tone(), sample_rate=rate, source_sample_rate=RATE)


def test_something_that_is_no_audio_source_is_an_audio_error() -> None:
    with pytest.raises(AudioError, match="expected a path"):
        load_audio(12345)  # type: ignore[arg-type]

"""Named distortion conditions: the spec grammar, one-line errors, per-utterance determinism, SNR, lengths."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechrep.audio import augment
from speechrep.audio.conditions import parse_condition, parse_conditions, split_condition_list
from speechrep.errors import ConfigError

SR = 16000
LENGTH_KEEPING = ["noise:snr=5", "noise:snr=0,kind=brown", "noise:snr=3,exponent=0.5", "babble:snr=5",
                  "reverb:rt60=0.8", "telephone", "clip:level=0.3", "dropout:rate=0.2",
                  "pitch:semitones=3", "pitch:semitones=-2"]
CODECS = [c for c, fmt in (("codec:format=mp3", "MP3"), ("codec:format=vorbis", "OGG"))
          if fmt in sf.available_formats()]


def _speech_like(seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tones = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate(rng.uniform(150, 3000, 5), 1))
    return (0.2 * tones * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.005 * rng.standard_normal(t.size)
            ).astype(np.float32)


def _others() -> list:
    return [(f"u{i}", f"spk{i % 3}", lambda i=i: _speech_like(100 + i, 0.3)) for i in range(6)]


def test_grammar_fills_defaults_and_splits_lists() -> None:
    assert split_condition_list("clean, noise:snr=5,kind=white ,reverb:rt60=0.8") == \
        ["clean", "noise:snr=5,kind=white", "reverb:rt60=0.8"]
    noise = parse_condition("noise:snr=5")
    assert noise.kind == "noise" and noise.param("snr") == 5.0 and noise.param("kind") == "pink"
    assert noise.spec == "noise:kind=pink,snr=5" and str(noise) == "noise:snr=5"
    assert parse_condition("noise:snr=5.0,kind=pink") == noise  # the same condition, the same seed
    assert parse_condition("noise:exponent=1.5").param("kind") is None
    kinds = [c.kind for c in parse_conditions("clean,telephone,speed:factor=0.9")]
    assert kinds == ["clean", "telephone", "speed"]


@pytest.mark.parametrize("spec, message", [
    ("loud", "unknown kind 'loud'"),
    ("noise:snr=5,colour=pink", "unknown parameter 'colour' for noise"),
    ("noise:snr=", "parameter 'snr' needs a value"),
    ("noise:snr=abc", "snr='abc' is not a number"),
    ("noise:kind=purple", "expected one of white, pink, brown"),
    ("noise:kind=white,exponent=1", "not both"),
    ("clip:level=2", "level must be in (0, 1]"),
    ("telephone:rate=8000", "unknown parameter 'rate' for telephone (expected: none)"),
    ("pitch:semitones=30", "semitones must be in [-24, 24]"),
])
def test_bad_specs_are_one_line_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_condition(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_repeated_condition_is_an_error() -> None:
    with pytest.raises(ConfigError, match="named twice"):
        parse_conditions("noise,noise:snr=10")


def test_clean_is_the_identity() -> None:
    x = _speech_like(0)
    assert np.array_equal(parse_condition("clean").apply(x, "a"), x)


@pytest.mark.parametrize("spec", LENGTH_KEEPING + CODECS)
def test_condition_changes_audio_deterministically_and_keeps_length(spec: str) -> None:
    cond, x = parse_condition(spec), _speech_like(0)
    y = cond.apply(x, "u0", SR, _others())
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert not np.allclose(y, x, atol=1e-4)
    same = parse_condition(spec).apply(x.copy(), "u0", SR, _others())
    assert np.array_equal(y, same)  # same id: same audio
    if cond.kind in ("noise", "babble", "reverb", "dropout"):  # the random kinds
        assert not np.array_equal(y, cond.apply(x, "u1", SR, _others()))  # another id: another draw


@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 20.0])
@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_noise_hits_the_snr(snr: float, kind: str) -> None:
    x = _speech_like(1)
    y = parse_condition(f"noise:snr={snr:g},kind={kind}").apply(x, "utt")
    assert augment.snr_db(x, y - x) == pytest.approx(snr, abs=0.1)


def test_recorded_noise_from_a_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hum = 0.1 * np.sin(2 * np.pi * 50 * np.arange(SR) / SR)  # two recordings: a hum and a hiss
    sf.write(tmp_path / "hum.wav", hum.astype(np.float32), SR)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "hiss.flac", (0.05 * rng.standard_normal(SR // 2)).astype(np.float32), SR)
    x = _speech_like(3)
    cond = parse_condition(f"noise:snr=5,dir={tmp_path}")
    assert cond.param("kind") is None and cond.param("dir") == str(tmp_path)
    picks = set()
    for utt in (f"u{i}" for i in range(12)):
        y = cond.apply(x, utt)
        assert y.shape == x.shape and augment.snr_db(x, y - x) == pytest.approx(5.0, abs=0.1)
        assert np.array_equal(y, cond.apply(x, utt))  # the same file and start for the same id
        # which recording was drawn: the hum has nearly all its energy below 100 Hz
        spectrum = np.abs(np.fft.rfft(y - x))
        picks.add(bool(spectrum[:50].sum() > 0.5 * spectrum.sum()))
    assert picks == {True, False}  # both files are drawn
    with pytest.raises(ConfigError, match="does not exist"):
        parse_condition(f"noise:dir={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="has no colour"):
        parse_condition(f"noise:dir={tmp_path},kind=white")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        parse_condition(f"noise:dir={tmp_path / 'empty'}")


def test_babble_hits_the_snr_and_needs_other_utterances() -> None:
    x = _speech_like(2)
    y = parse_condition("babble:snr=0,speakers=2").apply(x, "u0", SR, _others())
    assert augment.snr_db(x, y - x) == pytest.approx(0.0, abs=0.1)
    with pytest.raises(Exception, match="babble needs other utterances"):
        parse_condition("babble").apply(x, "u0", SR, [("u0", "s", lambda: x)])


def test_speed_changes_length_and_dropout_zeroes_chunks() -> None:
    x = _speech_like(3)
    assert len(parse_condition("speed:factor=1.25").apply(x, "a")) == pytest.approx(len(x) / 1.25, abs=2)
    y = parse_condition("dropout:rate=0.5,chunk_ms=20").apply(x, "a")
    chunks = y[: len(y) // 320 * 320].reshape(-1, 320)
    zeroed = np.all(chunks == 0, axis=1)
    assert 0.2 < zeroed.mean() < 0.8
    assert np.array_equal(chunks[~zeroed], x[: len(y) // 320 * 320].reshape(-1, 320)[~zeroed])


def test_telephone_removes_the_band_above_4khz() -> None:
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(parse_condition("telephone").apply(x, "a")))
    assert spectrum[6000] < 0.01 * spectrum[1000]


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * SR / x.size)


@pytest.mark.parametrize("semitones", [12.0, -12.0, 3.0])
def test_pitch_moves_a_tone_and_keeps_its_length_and_envelope(semitones: float) -> None:
    t = np.arange(SR) / SR
    envelope = np.where(t < 0.5, 1.0, 0.0)  # a tone for half a second, then silence: the tempo must stay
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * envelope).astype(np.float32)
    y = parse_condition(f"pitch:semitones={semitones:g}").apply(x, "a")
    assert y.shape == x.shape
    assert _peak_hz(y[1000:7000]) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.02)
    power = np.convolve(y ** 2, np.ones(800) / 800, mode="same")
    onset_off = np.flatnonzero(power > 0.1 * power.max())[-1] / SR  # where the tone ends
    assert onset_off == pytest.approx(0.5, abs=0.05)
    assert np.sqrt(np.mean(y[1000:7000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.2)


def test_pitch_zero_is_the_identity_and_the_canonical_spec_fills_the_default() -> None:
    x = _speech_like(4)
    assert np.array_equal(parse_condition("pitch:semitones=0").apply(x, "a"), x)
    assert parse_condition("pitch").spec == "pitch:semitones=2"


def test_pitch_matches_librosa() -> None:
    """Parity with librosa.effects.pitch_shift (same STFT sizes, soxr HQ); librosa is an optional reference.
    In float64 (librosa's float32 STFT differs from ours by ~1e-4 at a few samples)."""
    librosa = pytest.importorskip("librosa")
    from speechrep.audio.conditions import pitch_shift

    x = _speech_like(5, 0.7)
    for semitones in (2.0, -3.0, 0.5, 12.0):
        ours = pitch_shift(x, SR, semitones)
        reference = librosa.effects.pitch_shift(x.astype(np.float64), sr=SR, n_steps=semitones, n_fft=1024,
                                                hop_length=256, res_type="soxr_hq")
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_draw_condition_is_seeded_per_cut_and_epoch() -> None:
    from speechrep.audio.conditions import draw_condition

    conds = parse_conditions("clean,noise:snr=5,reverb")
    draws = [draw_condition(conds, f"u{i}", seed=0, epoch=0) for i in range(300)]
    assert draws == [draw_condition(conds, f"u{i}", seed=0, epoch=0) for i in range(300)]
    counts = [sum(d is c for d in draws) for c in conds]
    assert min(counts) > 70  # about uniform (100 each)
    assert draws != [draw_condition(conds, f"u{i}", seed=0, epoch=1) for i in range(300)]
    assert draws != [draw_condition(conds, f"u{i}", seed=1, epoch=0) for i in range(300)]

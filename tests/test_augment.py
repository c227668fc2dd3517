"""Audio distortions: measured SNR, reverberation time, filters, clipping and speed match their settings."""

import numpy as np
import pytest
from scipy import signal as sps

from speechrep.audio import augment

SR = 16000


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(SR * seconds)) / SR).astype(np.float32)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_add_noise_reaches_the_target_snr(snr):
    rng = np.random.default_rng(0)
    clean = _tone(300) * 0.3
    noise = rng.standard_normal(5000).astype(np.float32)  # shorter than the signal: tiled
    noisy = augment.add_noise(clean, noise, snr)
    assert noisy.shape == clean.shape
    assert augment.snr_db(clean, noisy - clean) == pytest.approx(snr, abs=1e-3)


def test_synthetic_rir_decays_with_the_requested_rt60():
    for rt60 in (0.3, 0.6):
        rir = augment.synthetic_rir(np.random.default_rng(1), SR, rt60=rt60).astype(np.float64)
        tail = rir.copy()
        tail[0] = 0.0  # Schroeder integration of the reverberant part only
        energy = np.cumsum(tail[::-1] ** 2)[::-1]
        edc = 10 * np.log10(energy / energy[0])
        t5, t25 = np.argmax(edc < -5) / SR, np.argmax(edc < -25) / SR
        measured = 3.0 * (t25 - t5)  # T20 extrapolated to 60 dB
        assert measured == pytest.approx(rt60, rel=0.25)


def test_reverberate_keeps_length_and_direct_path():
    rir = augment.synthetic_rir(np.random.default_rng(2), SR, rt60=0.4)
    impulse = np.zeros(SR, np.float32)
    impulse[100] = 1.0
    out = augment.reverberate(impulse, rir)
    assert out.shape == impulse.shape
    np.testing.assert_allclose(out[100 : 100 + 2000], rir[:2000], atol=1e-5)
    assert np.all(np.abs(out[:100]) < 1e-5)  # nothing before the direct sound


def test_random_eq_is_seeded_stable_and_bounded():
    a = augment.random_eq(np.random.default_rng(3), SR, num_bands=4, max_gain_db=6.0)
    b = augment.random_eq(np.random.default_rng(3), SR, num_bands=4, max_gain_db=6.0)
    c = augment.random_eq(np.random.default_rng(4), SR, num_bands=4, max_gain_db=6.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for section in a:
        assert np.all(np.abs(np.roots(section[3:])) < 1.0)  # poles inside the unit circle
    _, response = sps.sosfreqz(a, worN=512, fs=SR)
    gain_db = 20 * np.log10(np.abs(response))
    assert np.max(np.abs(gain_db)) <= 4 * 6.0 + 1e-6
    assert np.max(np.abs(gain_db)) > 1.0  # it does colour the channel


def test_band_limit_is_a_telephone_band():
    low, mid, high = _tone(80), _tone(1000), _tone(6000)

    def power(x):
        return augment.signal_power(augment.band_limit(x, SR)[4000:]) / augment.signal_power(x[4000:])

    assert 10 * np.log10(power(mid)) == pytest.approx(0.0, abs=1.0)
    assert 10 * np.log10(power(low)) < -30
    assert 10 * np.log10(power(high)) < -30


def test_clip_limits_at_a_fraction_of_the_peak():
    x = _tone(200) * 0.8
    y = augment.clip(x, 0.5)
    assert np.max(np.abs(y)) == pytest.approx(0.4, abs=1e-6)
    np.testing.assert_array_equal(y[np.abs(x) < 0.4], x[np.abs(x) < 0.4])
    with pytest.raises(ValueError):
        augment.clip(x, 1.5)


def test_speed_perturb_shortens_and_raises_pitch():
    x = _tone(440, 2.0)
    y = augment.speed_perturb(x, 1.1, SR)
    assert abs(y.size - x.size / 1.1) <= 2
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * SR / y.size
    assert peak_hz == pytest.approx(484.0, abs=2.0)


def test_coloured_noise_has_unit_power_and_the_requested_slope():
    for exponent in (0.0, 1.0, 2.0):
        noise = augment.coloured_noise(np.random.default_rng(5), 2**16, exponent)
        assert augment.signal_power(noise) == pytest.approx(1.0, rel=1e-3)
        freqs, psd = sps.welch(noise, fs=SR, nperseg=4096)
        band = (freqs > 50) & (freqs < 5000)
        slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.2)

"""Batched features against kaldi-native-fbank, padding invariance, deltas, CMVN and the module wrapper."""

from __future__ import annotations

import math

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from speechrep.audio import (
    FeatureExtractor,
    cmvn,
    deltas,
    fbank,
    mel_banks,
    mel_spectrogram,
    mfcc,
    num_frames,
    spectrogram,
)
from speechrep.errors import ConfigError

RATE = 16000


def speech_like(seconds: float = 1.3, seed: int = 0, f0_start: float = 120.0) -> np.ndarray:
    """A voiced-speech stand-in: a rising harmonic sweep with syllable-rate amplitude changes plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0_start + 60 * t) / RATE
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.05 * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (harmonics * envelope + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def kaldi_computer(wav: np.ndarray, kind: str, snip_edges: bool = True, **options: object):
    """A kaldi-native-fbank computer fed with `wav` (in [-1, 1]) and finished."""
    opts = knf.FbankOptions() if kind == "fbank" else knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = snip_edges
    for key, value in options.items():
        if key == "num_bins":
            opts.mel_opts.num_bins = value
        else:
            setattr(opts, key, value)
    computer = knf.OnlineFbank(opts) if kind == "fbank" else knf.OnlineMfcc(opts)
    computer.accept_waveform(RATE, (wav * 32768.0).tolist())  # Kaldi works on 16-bit sample values
    computer.input_finished()
    return computer


def kaldi_reference(wav: np.ndarray, kind: str, snip_edges: bool = True, **options: object) -> np.ndarray:
    computer = kaldi_computer(wav, kind, snip_edges, **options)
    return np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])


@pytest.mark.parametrize("snip_edges", [True, False])
def test_fbank_matches_kaldi(snip_edges: bool) -> None:
    wav = speech_like()
    reference = kaldi_reference(wav, "fbank", snip_edges, num_bins=80)
    feats, frame_lens = fbank(torch.from_numpy(wav)[None], snip_edges=snip_edges)
    assert feats.shape == (1, *reference.shape) and frame_lens.tolist() == [len(reference)]
    assert np.abs(feats[0].numpy() - reference).max() <= 1e-3


@pytest.mark.parametrize("samples", [80, 120, 390])
def test_utterances_shorter_than_a_frame_match_kaldi_without_snip_edges(samples: int) -> None:
    wav = speech_like(seconds=samples / RATE, seed=samples)
    reference = kaldi_reference(wav, "fbank", snip_edges=False, num_bins=80)
    feats, _ = fbank(torch.from_numpy(wav)[None], snip_edges=False)
    assert feats.shape == (1, *reference.shape)
    assert np.abs(feats[0].numpy() - reference).max() <= 1e-3


def test_fbank_with_energy_and_40_bins_matches_kaldi() -> None:
    wav = speech_like(seed=1, f0_start=200.0)
    reference = kaldi_reference(wav, "fbank", num_bins=40, use_energy=True)
    feats, _ = fbank(torch.from_numpy(wav)[None], num_mel_bins=40, use_energy=True)
    assert feats.shape[-1] == 41
    assert np.abs(feats[0].numpy() - reference).max() <= 1e-3


@pytest.mark.parametrize("snip_edges", [True, False])
def test_mfcc_matches_kaldi(snip_edges: bool) -> None:
    wav = speech_like(seed=2)
    reference = kaldi_reference(wav, "mfcc", snip_edges)
    feats, _ = mfcc(torch.from_numpy(wav)[None], snip_edges=snip_edges)
    assert feats.shape == (1, *reference.shape) == (1, reference.shape[0], 13)
    assert np.abs(feats[0].numpy() - reference).max() <= 1e-3


def test_log_spectrogram_matches_a_hand_computed_frame() -> None:
    wav = speech_like(seconds=0.1)
    feats, _ = spectrogram(torch.from_numpy(wav)[None])
    # Frame 3 by Kaldi's recipe, in float64 numpy: scale, DC removal, pre-emphasis, Povey window, 512-FFT.
    frame = wav[480:880].astype(np.float64) * 32768.0
    frame -= frame.mean()
    frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
    frame *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    expected = np.log(np.maximum(np.abs(np.fft.rfft(frame, 512)) ** 2, np.finfo(np.float32).eps))
    assert feats.shape == (1, num_frames(len(wav)), 257)
    assert np.abs(feats[0, 3].numpy() - expected).max() <= 1e-3


def test_mel_and_spectrogram_agree_with_fbank() -> None:
    wav = torch.from_numpy(speech_like(seconds=0.5))[None]
    power, _ = spectrogram(wav, log=False)
    mel, _ = mel_spectrogram(wav)
    log_mel, _ = fbank(wav)
    torch.testing.assert_close(power @ mel_banks(80, 512, RATE), mel, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(mel.clamp(min=torch.finfo(torch.float32).eps).log(), log_mel, rtol=1e-5, atol=1e-5)


KINDS = {
    "fbank": fbank,
    "mfcc": mfcc,
    "mel": mel_spectrogram,
    "spectrogram": spectrogram,
}


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_padded_batch_equals_one_by_one(kind: str, snip_edges: bool) -> None:
    sizes = [RATE, 9123, 401, 120]  # the last is shorter than one frame
    utterances = [torch.from_numpy(speech_like(n / RATE, seed=i)) for i, n in enumerate(sizes)]
    batch = torch.randn(len(sizes), max(sizes))  # loud garbage padding: must not leak into real frames
    for row, utterance in enumerate(utterances):
        batch[row, : len(utterance)] = utterance
    function = KINDS[kind]
    feats, frame_lens = function(batch, torch.tensor(sizes), snip_edges=snip_edges)
    expected_lens = [num_frames(n, snip_edges=snip_edges) for n in sizes]
    assert frame_lens.tolist() == expected_lens
    assert expected_lens[3] == (0 if snip_edges else 1)
    for row, utterance in enumerate(utterances):
        alone, alone_lens = function(utterance[None], snip_edges=snip_edges)
        count = expected_lens[row]
        assert alone_lens.tolist() == [count]
        torch.testing.assert_close(feats[row, :count], alone[0], rtol=1e-5, atol=1e-4)
        assert not feats[row, count:].any()


def test_num_frames_matches_kaldi_for_ints_and_tensors() -> None:
    for samples in [1, 79, 80, 399, 400, 559, 560, 16000, 16079, 16080]:
        silence = np.zeros(samples, np.float32)
        snipped = kaldi_computer(silence, "fbank").num_frames_ready
        assert num_frames(samples) == snipped
        assert num_frames(torch.tensor([samples])).tolist() == [snipped]
        centred = kaldi_computer(silence, "fbank", snip_edges=False).num_frames_ready
        assert num_frames(samples, snip_edges=False) == centred
    assert num_frames(0) == 0


def test_deltas_hand_computed() -> None:
    feats = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]).view(1, 5, 1)
    # window 1: (x[t+1] - x[t-1]) / 2 with edge frames repeated
    first = deltas(feats, order=1, window=1)
    assert first[0, :, 1].tolist() == [0.5, 1.5, 3.0, 6.0, 4.0]
    # order 2 uses Kaldi's combined kernel [1, 0, -2, 0, 1] / 4 on edge-repeated input
    second = deltas(feats, order=2, window=1)
    assert second.shape == (1, 5, 3)
    assert second[0, :, 0].tolist() == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert second[0, :, 2].tolist() == [0.75, 1.25, 2.25, 0.5, -3.0]


def test_deltas_match_kaldi_and_ignore_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 30, 6, generator=generator)
    opts = knf.DeltaOptions()
    opts.order, opts.window = 2, 2
    for row, length in enumerate([30, 17]):
        reference = knf.compute_deltas(opts, feats[row, :length].numpy())
        alone = deltas(feats[row : row + 1, :length])
        np.testing.assert_allclose(alone[0].numpy(), reference, atol=1e-5)
    padded = deltas(feats, lengths=torch.tensor([30, 17]))
    torch.testing.assert_close(padded[1, :17], deltas(feats[1:, :17])[0])
    assert not padded[1, 17:].any()


def test_cmvn_uses_only_valid_frames() -> None:
    generator = torch.Generator().manual_seed(1)
    feats = 3.0 + 2.0 * torch.randn(2, 50, 4, generator=generator)
    feats[1, 20:] = 1e6  # padding that must not enter the statistics
    out = cmvn(feats, torch.tensor([50, 20]))
    valid = out[1, :20]
    torch.testing.assert_close(valid.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert not out[1, 20:].any()
    manual = (feats[0] - feats[0].mean(0)) / (feats[0].var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(out[0], manual, atol=1e-5, rtol=1e-5)
    centred = cmvn(feats, torch.tensor([50, 20]), norm_vars=False)
    torch.testing.assert_close(centred[0], feats[0] - feats[0].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kind, options, dim", [("fbank", {}, 80), ("mfcc", {}, 13), ("mel", {"num_mel_bins": 40}, 40),
                           ("spectrogram", {}, 257), ("fbank", {"delta_order": 2}, 240)]
)
def test_feature_extractor_module(kind: str, options: dict, dim: int) -> None:
    extractor = FeatureExtractor(kind, apply_cmvn=True, **options)
    assert extractor.dim == dim and extractor.stride == 160 and extractor.sample_rate == RATE
    wavs = torch.from_numpy(np.stack([speech_like(0.5, seed=3), speech_like(0.5, seed=4)])).requires_grad_()
    lengths = torch.tensor([8000, 6000])
    feats, frame_lens = extractor(wavs, lengths)
    assert feats.shape == (2, 48, dim) and frame_lens.tolist() == [48, 36]
    expected, _ = KINDS[kind](wavs[1:, :6000], **{k: v for k, v in options.items() if k != "delta_order"})
    if options.get("delta_order"):
        expected = deltas(expected, options["delta_order"])
    torch.testing.assert_close(feats[1, :36], cmvn(expected)[0], rtol=1e-4, atol=1e-3)
    feats.square().sum().backward()
    assert torch.isfinite(wavs.grad).all() and wavs.grad[0].abs().sum() > 0
    assert not wavs.grad[1, 6000:].any()  # padding gets no gradient


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="frame_lenght_ms"):
        FeatureExtractor("fbank", frame_lenght_ms=20)
    with pytest.raises(ConfigError, match="kind"):
        FeatureExtractor("wavelets")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window_type"):
        fbank(torch.zeros(1, 1000), window_type="triangle")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    wavs = torch.from_numpy(np.stack([speech_like(0.7, seed=5), speech_like(0.7, seed=6)]))
    lengths = torch.tensor([11200, 7000])
    for kind in ("fbank", "mfcc"):
        extractor = FeatureExtractor(kind, delta_order=2, apply_cmvn=True, snip_edges=False)
        cpu, cpu_lens = extractor(wavs, lengths)
        gpu, gpu_lens = extractor.cuda()(wavs.cuda(), lengths.cuda())
        assert gpu_lens.tolist() == cpu_lens.tolist()
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3)


def test_dither_changes_output_only_when_enabled() -> None:
    wav = torch.from_numpy(speech_like(0.2))[None]
    torch.manual_seed(0)
    plain, _ = fbank(wav)
    again, _ = fbank(wav)
    dithered, _ = fbank(wav, dither=1.0)
    assert torch.equal(plain, again)
    assert 0 < (dithered - plain).abs().max() < 1.0
    assert math.isclose(float(plain.mean()), float(dithered.mean()), abs_tol=0.05)


def test_constants_first_built_in_inference_mode_still_serve_autograd() -> None:
    wavs = torch.from_numpy(np.stack([speech_like(0.3, seed=7)]))
    options = {"num_mel_bins": 37, "num_ceps": 11, "delta_order": 1}  # fresh cache entries
    with torch.inference_mode():  # e.g. an evaluation builds and caches the window, banks, DCT, deltas first
        FeatureExtractor("mfcc", **options)(wavs, torch.tensor([wavs.shape[1]]))
    wavs.requires_grad_()
    feats, _ = FeatureExtractor("mfcc", **options)(wavs, torch.tensor([wavs.shape[1]]))
    feats.square().sum().backward()
    assert torch.isfinite(wavs.grad).all() and wavs.grad.abs().sum() > 0

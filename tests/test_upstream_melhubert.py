"""MelHuBERT input: standardised 40-bin Kaldi fbank with odd/even frames stacked as in the original recipe."""

from __future__ import annotations

import torch

from speechrep import load_upstream
from speechrep.audio.features import fbank


def test_stacked_standardised_fbank_matches_the_recipe() -> None:
    model = load_upstream("melhubert_tiny").eval()
    mean, std = torch.linspace(-1.0, 1.0, 40), torch.linspace(0.5, 2.0, 40)
    model.set_feature_stats(mean, std)
    wav = 0.1 * torch.randn(1, 16000 + 160 * 7)  # 105 fbank frames: an odd count
    feats, lengths = model.input_features(wav, torch.tensor([wav.shape[1]]))
    mels, _ = fbank(wav, torch.tensor([wav.shape[1]]), num_mel_bins=40, window_type="hamming")
    y = (mels[0] - mean) / std
    assert y.shape[0] == 105
    # the recipe: concatenate frames 0, 2, 4, ... with frames 1, 3, 5, ..., zero-filling the missing last one
    odd, even = y[::2], torch.cat([y[1::2], torch.zeros(1, 40)])
    expected = torch.cat([odd, even], dim=1)
    assert lengths.tolist() == [53] and feats.shape == (1, 53, 80)
    torch.testing.assert_close(feats[0], expected, atol=1e-5, rtol=1e-5)
    assert model.stride == 320


def test_masked_frames_are_zeroed_before_projection() -> None:
    model = load_upstream("melhubert_tiny").eval()
    wav = 0.1 * torch.randn(1, 8000)
    with torch.no_grad():
        feats, lengths = model.input_features(wav, torch.tensor([8000]))
        mask = torch.zeros(feats.shape[:2], dtype=torch.bool)
        mask[0, 5:10] = True
        masked, _ = model.encode(feats, lengths, mask_time_indices=mask)
        zeroed, _ = model.encode(feats.masked_fill(mask[..., None], 0.0), lengths)
        plain, _ = model.encode(feats, lengths)
    torch.testing.assert_close(masked[-1], zeroed[-1])
    assert (masked[-1] - plain[-1]).abs().max() > 1e-3

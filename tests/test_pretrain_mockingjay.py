"""Mockingjay pre-training and the masked-reconstruction pieces it shares with TERA and Audio ALBERT."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_corpus import first_batch, loss_before_and_after, unlabeled_corpus

from speechrep.errors import ConfigError
from speechrep.pretrain import run_method
from speechrep.pretrain.mockingjay import Alteration, MaskedReconstruction, alter_features, masked_l1
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def _feats(batch: int = 64, frames: int = 200, dim: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lengths = torch.randint(frames // 2, frames + 1, (batch,))
    lengths[0] = frames
    feats = torch.randn(batch, frames, dim) * (torch.arange(frames)[None, :, None] < lengths[:, None, None])
    return feats, lengths


def _frames(mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) position mask → (B, T) frames where every channel is a target."""
    return mask.all(-1)


def test_time_alteration_spans_cover_15_percent_and_split_80_10_10() -> None:
    feats, lengths = _feats()
    torch.manual_seed(1)
    altered, targets = alter_features(feats, lengths, Alteration(time_prob=0.15, time_span=7))
    chosen = _frames(targets)
    valid = torch.arange(feats.shape[1])[None] < lengths[:, None]
    assert torch.equal(targets, chosen[..., None].expand_as(targets))  # whole frames only
    assert not (chosen & ~valid).any() and (altered[~valid] == 0).all()
    share = chosen.sum() / valid.sum()
    assert 0.11 < share < 0.16  # spans may overlap, so a little below 15 %
    assert torch.equal(altered[~chosen & valid], feats[~chosen & valid])  # only the chosen frames change
    # per utterance, all chosen frames are zeroed (80 %), or replaced (10 %), or kept (10 %)
    utts = [b for b in range(len(feats)) if chosen[b].any()]
    zeroed = [b for b in utts if (altered[b][chosen[b]] == 0).all()]
    kept = [b for b in utts if torch.equal(altered[b][chosen[b]], feats[b][chosen[b]])]
    replaced = [b for b in utts if b not in zeroed and b not in kept]
    assert 0.65 * len(utts) < len(zeroed) < 0.95 * len(utts)
    assert kept and replaced and len(zeroed) + len(kept) + len(replaced) == len(utts)


def test_random_replacement_takes_another_segment_of_the_same_utterance() -> None:
    feats, lengths = _feats(batch=4, frames=60, dim=5)
    # frame t of utterance b holds 1000·b + t, so a replaced frame tells where it came from
    valid = torch.arange(60)[None, :, None] < lengths[:, None, None]
    feats = (torch.arange(60.0)[None, :, None] + 1000 * torch.arange(4.0)[:, None, None]).expand(4, 60, 5)
    feats = feats * valid
    altered, targets = alter_features(feats, lengths, Alteration(time_prob=0.3, time_span=5, random_share=1.0,
                                                                 keep_share=0.0))
    chosen = _frames(targets)
    for b in range(4):
        src = altered[b, chosen[b], 0]
        assert ((src >= 1000 * b) & (src < 1000 * b + lengths[b])).all()  # from this utterance's valid frames
        offsets = (src - 1000 * b - torch.nonzero(chosen[b])[:, 0]) % lengths[b]
        assert (offsets == offsets[0]).all() and offsets[0] != 0  # one shifted, contiguous segment


def test_frequency_band_and_noise() -> None:
    feats, lengths = _feats(batch=16, frames=50)
    altered, targets = alter_features(feats, lengths, Alteration(time_prob=0.0, freq_fraction=0.2))
    valid = torch.arange(50)[None] < lengths[:, None]
    band = targets[:, 0]  # (B, D): the same channels on every valid frame
    assert torch.equal(targets, band[:, None, :] & valid[..., None])
    widths = band.sum(-1)
    assert widths.max() <= 16 and widths.max() > 0
    for b in range(16):  # one contiguous band, zeroed
        idx = torch.nonzero(band[b])[:, 0]
        assert len(idx) == 0 or (idx[-1] - idx[0] + 1 == len(idx))
    assert (altered[targets] == 0).all() and torch.equal(altered[~targets], feats[~targets])
    noisy, noise_targets = alter_features(feats, lengths, Alteration(time_prob=0.0, noise_prob=1.0))
    assert not noise_targets.any()  # noise alone marks nothing to reconstruct
    assert float((noisy - feats)[valid].std()) == pytest.approx(0.2, rel=0.05)


def test_masked_l1_by_hand() -> None:
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    positions = torch.tensor([[[True, False], [True, True]]])
    assert float(masked_l1(pred, target, positions)) == pytest.approx((1 + 2 + 3) / 3)
    assert float(masked_l1(pred, target, torch.zeros_like(positions))) == 0.0


def test_alteration_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="random_share"):
        Alteration(random_share=0.6, keep_share=0.5)
    with pytest.raises(ConfigError, match="time_prob"):
        Alteration(time_prob=1.5)


def test_mockingjay_overfits_one_batch(corpus: Path) -> None:
    torch.set_num_threads(1)
    objective = MaskedReconstruction(load_upstream("mockingjay_tiny", dropout=0.0), Alteration(time_span=3))
    before, after = loss_before_and_after(objective, first_batch(corpus), steps=40)
    assert after < 0.9 * before  # the same masks/codes before and after 40 steps on the batch


def test_mockingjay_trains_and_exports(corpus: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("mockingjay", corpus, tmp_path / "run", "tiny",
                     ["model.hidden_size=32", "model.ffn_size=64", "train.max_steps=3", "train.eval_every=3"])
    upstream = load_upstream(out)
    assert upstream.stride == 480 and len(upstream.hidden_sizes) == 3  # embedding + 2 layers; frames ×3
    hidden = upstream(torch.randn(1, 16000), torch.tensor([16000]))
    assert hidden.lengths.tolist() == [32] and hidden.hidden_states[-1].shape == (1, 32, 32)

"""speechrep.nn.frames: the one stack_frames (two tail rules) and padding_mask."""

from __future__ import annotations

import pytest
import torch

from speechrep.nn.frames import padding_mask, stack_frames


def _old_drop(feats, lengths, factor):  # Mockingjay's former copy, kept here as the reference
    B, T, D = feats.shape
    T = T // factor * factor
    return feats[:, :T].reshape(B, T // factor, D * factor), lengths // factor


def _old_pad(feats, lengths, factor):  # MelHuBERT's and k-means' former copies (they agreed)
    batch, count, dim = feats.shape
    groups = -(-count // factor)
    feats = torch.nn.functional.pad(feats, (0, 0, 0, groups * factor - count))
    return feats.reshape(batch, groups, factor * dim), -(-lengths // factor)


@pytest.mark.parametrize("frames", [6, 7, 8])
@pytest.mark.parametrize("factor", [2, 3])
def test_stack_frames_tail_rules_match_the_former_copies(frames: int, factor: int) -> None:
    feats = torch.randn(2, frames, 5)
    lengths = torch.tensor([frames, frames - 2])
    for tail, old in (("drop", _old_drop), ("pad", _old_pad)):
        stacked, new_lengths = stack_frames(feats, lengths, factor, tail=tail)
        ref, ref_lengths = old(feats, lengths, factor)
        assert torch.equal(stacked, ref) and torch.equal(new_lengths, ref_lengths)
    dropped, _ = stack_frames(feats, lengths, factor, tail="drop")
    padded, _ = stack_frames(feats, lengths, factor, tail="pad")
    assert dropped.shape[1] == frames // factor and padded.shape[1] == -(-frames // factor)
    if frames % factor:  # the padded tail group holds the last frames then zeros
        assert torch.equal(padded[:, -1, : (frames % factor) * 5], feats[:, -(frames % factor):].flatten(1))
        assert not padded[:, -1, (frames % factor) * 5:].any()


def test_stack_frames_rejects_an_unknown_tail_rule_and_factor_one_is_identity() -> None:
    feats, lengths = torch.randn(1, 4, 2), torch.tensor([4])
    assert stack_frames(feats, lengths, 1, tail="pad")[0] is feats
    with pytest.raises(ValueError, match="tail"):
        stack_frames(feats, lengths, 2, tail="ceil")  # type: ignore[arg-type]


def test_padding_mask_marks_valid_positions() -> None:
    assert padding_mask(torch.tensor([2, 0, 3]), 3).tolist() == [
        [True, True, False], [False, False, False], [True, True, True]]

"""Time-span masking: spans stay in valid frames, the masked fraction follows mask_prob, seeds reproduce."""

from __future__ import annotations

import torch

from speechrep.nn.masking import compute_span_mask


def test_spans_stay_in_valid_frames_and_follow_mask_prob() -> None:
    lengths = torch.tensor([500, 300, 120])
    mask = compute_span_mask(
        lengths, 500, mask_prob=0.65, span_length=10, generator=torch.Generator().manual_seed(0)
    )
    assert mask.shape == (3, 500) and mask.dtype == torch.bool
    for row, length in enumerate(lengths.tolist()):
        assert not mask[row, length:].any()
    # overlapping spans cover 1 - exp(-0.65) ≈ 48% of the frames in expectation (fairseq's behaviour)
    many = compute_span_mask(
        torch.full((200,), 400), 400, 0.65, 10, generator=torch.Generator().manual_seed(1)
    )
    assert 0.40 < many.float().mean().item() < 0.56
    # every masked run is made of whole spans: run lengths are at least span_length
    zero = torch.zeros(1, dtype=torch.int32)
    edges = torch.diff(many[0].int(), prepend=zero, append=zero)
    starts, ends = (edges == 1).nonzero().flatten(), (edges == -1).nonzero().flatten()
    assert ((ends - starts) >= 10).all()


def test_seeded_and_min_spans() -> None:
    lengths = torch.tensor([50, 40])
    a = compute_span_mask(lengths, 50, 0.3, 5, generator=torch.Generator().manual_seed(7))
    b = compute_span_mask(lengths, 50, 0.3, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    sparse = compute_span_mask(lengths, 50, 0.01, 5, min_spans=2, generator=torch.Generator().manual_seed(0))
    assert (sparse.sum(1) >= 5).all()  # at least two (possibly overlapping) spans of 5
    short = compute_span_mask(torch.tensor([3]), 10, 0.9, 5, min_spans=2)
    assert not short.any()  # no span fits in 3 frames

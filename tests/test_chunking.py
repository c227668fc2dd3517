"""Chunked extraction of long audio: frame alignment, exactness of frame-local front ends, context loss."""

from __future__ import annotations

import pytest
import torch

from speechrep import load_upstream
from speechrep.errors import ConfigError
from speechrep.nn.conv_encoder import conv_receptive_field
from speechrep.upstream.base import FrameGeometry
from speechrep.upstream.chunking import chunked_forward, frame_geometry, iter_chunks, plan_chunks
from speechrep.upstream.wav2vec2 import BASE_CONV


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    """6 s of noise plus a tone: long enough for several windows."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(16000 * 6) / 16000
    return 0.1 * torch.randn(t.shape[0], generator=generator) + 0.3 * torch.sin(2 * torch.pi * 220 * t)


def _full(model: torch.nn.Module, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        return model(wav[None], torch.tensor([wav.shape[0]])).hidden_states


def _relative_errors(full: list[torch.Tensor], chunked: list[torch.Tensor]) -> list[float]:
    return [float((a - b).norm() / a.norm()) for a, b in zip(full, chunked)]


def test_geometry_from_conv_config_and_feature_window() -> None:
    # wav2vec 2.0 stack (10,5),(3,2)x4,(2,2)x2: 1 + 9 + 2·5 + 2·10 + 2·20 + 2·40 + 80 + 160 = 400 samples
    geometry = frame_geometry(load_upstream("wav2vec2_tiny"))
    assert (geometry.receptive_field, geometry.stride, geometry.offset) == (400, 320, 0)
    assert conv_receptive_field(BASE_CONV) == (400, 320)  # the tiny model has the Base kernels and strides
    fbank = frame_geometry(load_upstream("fbank"))
    assert (fbank.receptive_field, fbank.stride, fbank.offset) == (400, 160, 0)
    # CPC: kernels 10,8,4,4,4, strides 5,4,2,2,2, paddings 3,2,1,1,1 → 465 samples, left padding 153
    cpc = frame_geometry(load_upstream("cpc"))
    assert (cpc.receptive_field, cpc.stride, cpc.offset) == (10 + 7 * 5 + 3 * 20 + 3 * 40 + 3 * 80, 160,
                                                             3 + 2 * 5 + 1 * 20 + 1 * 40 + 1 * 80)


@pytest.mark.parametrize("name, overrides", [("fbank_raw", {}), ("mfcc", dict(cmvn=False))])
def test_frame_local_features_equal_the_full_pass(wav: torch.Tensor, name: str, overrides: dict) -> None:
    model = load_upstream(name, **overrides).eval()
    full = _full(model, wav)
    with torch.inference_mode():
        chunked = chunked_forward(model, wav, chunk_seconds=2.0, overlap_seconds=0.25).hidden_states
    assert chunked[0].shape == full[0].shape
    torch.testing.assert_close(chunked[0], full[0], atol=1e-4, rtol=1e-5)


def test_conv_features_exact_and_deeper_layers_close_with_error_shrinking_as_overlap_grows(
    wav: torch.Tensor,
) -> None:
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny", conv_norm="layer").eval()  # no utterance-wide group norm
    full = _full(model, wav)
    errors = []
    for overlap in (0.25, 1.0):
        with torch.inference_mode():
            chunked = chunked_forward(model, wav, chunk_seconds=1 + 2 * overlap, overlap_seconds=overlap)
        assert [h.shape for h in chunked.hidden_states] == [h.shape for h in full]
        assert int(chunked.lengths[0]) == full[0].shape[1]
        errors.append(_relative_errors(full, chunked.hidden_states))
    # layer 0 (CNN + 16-frame positional conv) only sees samples inside the overlap: identical
    assert errors[0][0] < 1e-5 and errors[1][0] < 1e-5
    # attention layers lose the context beyond a window; more overlap, smaller loss
    assert 0 < errors[1][2] < errors[0][2] < 0.05
    assert errors[1][1] < errors[0][1] < 0.05


def test_one_window_covering_the_input_is_the_full_pass(wav: torch.Tensor) -> None:
    model = load_upstream("wavlm_tiny").eval()
    full = _full(model, wav)
    with torch.inference_mode():
        chunked = chunked_forward(model, wav, chunk_seconds=10.0, overlap_seconds=1.0, layers=[0, 2])
    torch.testing.assert_close(chunked.hidden_states[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.hidden_states[1], full[2], atol=1e-5, rtol=1e-5)


def test_cores_tile_the_frames_without_gap_or_duplicate(wav: torch.Tensor) -> None:
    model = load_upstream("fbank_raw").eval()
    plan = plan_chunks(model, chunk_seconds=2.0, overlap_seconds=0.5)
    assert (plan.window_frames, plan.overlap_frames, plan.core_frames) == (200, 50, 100)
    with torch.inference_mode():
        pieces = [(start, kept[0].shape[0]) for start, kept in iter_chunks(model, wav, 2.0, 0.5)]
    starts = [start for start, _ in pieces]
    ends = [start + count for start, count in pieces]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    assert ends[-1] == (wav.shape[0] - 400) // 160 + 1


def test_bad_chunk_settings_are_a_config_error(wav: torch.Tensor) -> None:
    model = load_upstream("fbank_raw")
    with pytest.raises(ConfigError, match="chunk_seconds"):
        chunked_forward(model, wav, chunk_seconds=1.0, overlap_seconds=0.5)
    with pytest.raises(ConfigError, match="one waveform"):
        chunked_forward(model, wav[None], chunk_seconds=2.0, overlap_seconds=0.5)


def test_geometry_is_read_from_the_declaration_not_guessed() -> None:
    class Undeclared(torch.nn.Module):
        stride = 160  # a stride alone no longer passes for a log-mel front end

    with pytest.raises(ConfigError, match="Undeclared: declares no frame_geometry"):
        frame_geometry(Undeclared())
    melhubert = load_upstream("melhubert_tiny")  # 2 stacked log-mel frames, a short tail zero-filled
    assert frame_geometry(melhubert) == FrameGeometry(560, 320, 0, 160, True)

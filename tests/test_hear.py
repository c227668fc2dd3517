"""HEAR adapter: required attributes, exact timestamps from the receptive field, scene = mean over time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import speechrep.hear as hear
from speechrep import load_upstream
from speechrep.errors import ConfigError
from speechrep.upstream.loading import export_upstream


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    """Two 1.5 s sounds."""
    return 0.2 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(0))


def test_wav2vec2_conv_stack_timestamps_by_hand(audio: torch.Tensor) -> None:
    model = hear.load_model("", upstream="wav2vec2_tiny", layer=2)
    assert model.sample_rate == 16000 and model.timestamp_embedding_size == model.scene_embedding_size == 32
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    # hand computation: kernels 10,3,3,3,3,2,2 and strides 5,2,2,2,2,2,2 give a 400-sample receptive field
    # and a 320-sample stride; frame j covers samples [320 j, 320 j + 400), centre 320 j + 200
    frames = (24000 - 400) // 320 + 1
    assert embeddings.shape == (2, frames, 32) and timestamps.shape == (2, frames)
    expected = (torch.arange(frames) * 320 + 200) / 16  # ms
    assert timestamps[0, 0].item() == 12.5 and timestamps[1, 1].item() == 32.5
    torch.testing.assert_close(timestamps, expected.float().expand(2, -1), atol=1e-4, rtol=0)


def test_fbank_timestamps_25ms_window_10ms_shift(audio: torch.Tensor) -> None:
    model = hear.load_model("", upstream="fbank")
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    frames = (24000 - 400) // 160 + 1
    assert embeddings.shape == (2, frames, 80)
    torch.testing.assert_close(timestamps[1], 12.5 + 10.0 * torch.arange(frames).float(), atol=1e-4, rtol=0)


def test_scene_embedding_is_the_time_mean_and_layer_none_the_layer_mean(audio: torch.Tensor) -> None:
    torch.manual_seed(0)
    upstream = load_upstream("hubert_tiny").eval()
    model = hear.HearModel(upstream, layer=None)
    with torch.inference_mode():
        layers = upstream(audio, torch.tensor([24000, 24000])).hidden_states
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(embeddings, torch.stack(layers).mean(0), atol=1e-5, rtol=1e-5)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size)
    torch.testing.assert_close(scene, embeddings.mean(1), atol=1e-6, rtol=1e-6)


def test_long_sounds_go_through_chunking_with_the_same_frames(audio: torch.Tensor) -> None:
    upstream = load_upstream("fbank_raw")
    whole = hear.HearModel(upstream)
    chunked = hear.HearModel(upstream, chunk_seconds=0.6, overlap_seconds=0.1)
    expected, stamps = hear.get_timestamp_embeddings(audio, whole)
    got, chunk_stamps = hear.get_timestamp_embeddings(audio, chunked)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(chunk_stamps, stamps)


def test_load_model_from_an_exported_directory(audio: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(1)
    upstream = load_upstream("wavlm_tiny")
    directory = export_upstream(upstream, tmp_path / "wavlm", {"test": True})
    model = hear.load_model(str(directory), layer=-1)
    with torch.inference_mode():
        expected = upstream.eval()(audio, torch.tensor([24000, 24000])).hidden_states[-1]
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, model)[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="layer 5 out of range"):
        hear.load_model(str(directory), layer=5)

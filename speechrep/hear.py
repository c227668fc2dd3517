"""HEAR benchmark API (https://hearbenchmark.com/hear-api.html) over any speechrep upstream.

    import speechrep.hear as module
    model = module.load_model("", upstream="hubert_base", layer=9)   # or a checkpoint/exported model path
    emb, ts = module.get_timestamp_embeddings(audio, model)         # audio (n_sounds, n_samples) at 16 kHz
    scene = module.get_scene_embeddings(audio, model)

Timestamps are exact, not stride/2 guesses: output frame j of an upstream depends on input samples
[j·stride − offset, j·stride − offset + receptive_field), the receptive field of the front end, which each
family declares from its configuration (`upstream.frame_geometry`): the conv stack's kernels and strides
for the wav2vec 2.0 family (400 samples, stride 320 → centres at 12.5, 32.5, 52.5 ms ...), the analysis
window for fbank/MFCC-style baselines and log-mel families (25 ms window, 10 ms shift → 12.5, 22.5 ms ...;
`k` stacked frames span 400 + 160·(k − 1) samples), the padded conv stack for CPC. A frame's timestamp
is the centre of that interval in milliseconds. Self-attention or RNN layers above the front end see wider
context; the timestamp locates the frame's own samples. Sounds longer than `chunk_seconds` run in
overlapping windows (`speechrep.upstream.chunking`), so memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from speechrep.errors import AudioError, ConfigError
from speechrep.upstream.base import on_frame_grid
from speechrep.upstream.chunking import chunked_forward, frame_geometry
from speechrep.upstream.loading import load_upstream, load_upstream_for_inference

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]


class HearModel(nn.Module):
    """An upstream plus the attributes HEAR requires; embeddings are one hidden state or the mean of all."""

    def __init__(
        self, upstream: nn.Module, layer: int | None = None, chunk_seconds: float = 30.0,
        overlap_seconds: float = 5.0,
    ):
        super().__init__()
        self.upstream = upstream.eval()
        sizes = list(upstream.hidden_sizes)
        if layer is not None and not -len(sizes) <= layer < len(sizes):
            raise ConfigError(f"hear: layer {layer} out of range; this upstream has 0..{len(sizes) - 1}")
        if layer is None and len(set(sizes)) != 1:
            raise ConfigError(f"hear: layer=None averages all layers, but their sizes differ ({sizes})")
        self.layer = layer
        self.sample_rate = int(upstream.sample_rate)
        self.geometry = frame_geometry(upstream)
        self.timestamp_embedding_size = sizes[layer] if layer is not None else sizes[0]
        self.scene_embedding_size = self.timestamp_embedding_size
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap_seconds

    def _select(self, hidden_states: list[Tensor]) -> Tensor:
        """The chosen layer, or the mean over all layers."""
        if self.layer is not None:
            return hidden_states[self.layer]
        return torch.stack(hidden_states).mean(0)

    def forward(self, audio: Tensor) -> Tensor:
        """(n_sounds, n_samples) → (n_sounds, n_frames, embedding size) frame embeddings."""
        if audio.dim() != 2:
            raise ConfigError(f"hear: audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
        audio = audio.float()
        finite = torch.isfinite(audio).all(dim=1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise AudioError(f"hear: sound {first} has NaN or Inf samples")
        if audio.shape[1] <= self.chunk_seconds * self.sample_rate:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
            # a sequence-compressed upstream's segments are repeated onto its frame grid
            states, _ = on_frame_grid(self.upstream(audio, lengths), lengths, self.geometry, self.sample_rate)
            return self._select(states)
        return torch.cat([self._chunked(sound) for sound in audio])

    def _chunked(self, sound: Tensor) -> Tensor:
        """(n_samples,) → (1, n_frames, embedding size) through overlapping windows."""
        layers = None if self.layer is None else [self.layer % len(self.upstream.hidden_sizes)]
        output = chunked_forward(self.upstream, sound, self.chunk_seconds, self.overlap_seconds, layers)
        return output.hidden_states[0] if layers is not None else torch.stack(output.hidden_states).mean(0)

    def timestamps(self, n_sounds: int, n_frames: int) -> Tensor:
        """(n_sounds, n_frames) centre of each frame's receptive field, in milliseconds."""
        centres = self.geometry.centre_samples(n_frames) * (1000.0 / self.sample_rate)
        return centres.float()[None].expand(n_sounds, -1)


def load_model(
    model_file_path: str = "", upstream: str = "hubert_base", layer: int | None = None
) -> HearModel:
    """A HEAR model: `upstream` by name (random weights if `model_file_path` is empty, else its weights), or
    the model at `model_file_path` itself when that is a directory (speechrep export, HF) or a fairseq .pt."""
    if not model_file_path:  # random weights, seeded from the name; warns once per name
        model = load_upstream_for_inference(upstream)
    elif Path(model_file_path).is_dir() or model_file_path.endswith(".pt"):
        model = load_upstream(model_file_path)
    else:
        model = load_upstream(upstream, checkpoint=model_file_path)
    return HearModel(model, layer)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """(n_sounds, n_samples) → ((n_sounds, n_frames, size) embeddings, (n_sounds, n_frames) times in ms)."""
    with torch.inference_mode():
        embeddings = model(audio)
    timestamps = model.timestamps(embeddings.shape[0], embeddings.shape[1]).to(embeddings.device)
    return embeddings, timestamps


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """(n_sounds, n_samples) → (n_sounds, size): the mean of the frame embeddings over time."""
    embeddings, _ = get_timestamp_embeddings(audio, model)
    return embeddings.mean(1)

"""What synthesis and conversion read from audio: the shared log-mel, or one hidden state of an upstream.

`FrameFeatures("logmel")` or `FrameFeatures(upstream_name_or_dir, layer=L)` turns a wave (T,) into frames
(T', H) with a known hop in samples; long files run through the hub's chunked inference.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from speechrep.audio import load_audio
from speechrep.audio import synthesis as spectral
from speechrep.errors import ConfigError
from speechrep.upstream.chunking import chunked_forward
from speechrep.upstream.extract import load_upstream_flag
from speechrep.upstream.feature_store import upstream_fingerprint

LOG_MEL = "logmel"


class FrameFeatures:
    """A frame-level feature extractor: `features(wav) -> (frames, size)` at `hop` samples per frame."""

    def __init__(self, upstream: str = LOG_MEL, layer: int | None = None):
        self.name, self.layer = upstream, layer
        if upstream == LOG_MEL:
            if layer is not None:
                raise ConfigError("features: log-mel has no layers; leave --layer out")
            self.model, self.hop, self.size = None, spectral.HOP, spectral.NUM_MELS
            self.fingerprint = LOG_MEL
            return
        if layer is None:
            raise ConfigError(f"--upstream {upstream}: name the hidden state with --layer")
        self.model = load_upstream_flag(upstream).eval()
        layers = len(self.model.hidden_sizes)
        if not 0 <= layer < layers:
            raise ConfigError(f"--layer {layer}: {upstream} has hidden states 0..{layers - 1}")
        self.hop, self.size = int(self.model.stride), int(self.model.hidden_sizes[layer])
        self.fingerprint = upstream_fingerprint(self.model)

    def settings(self) -> dict:
        """What the features are, for settings records: name, layer, weights fingerprint, hop."""
        return {"upstream": self.name, "layer": self.layer, "fingerprint": self.fingerprint, "hop": self.hop}

    @torch.inference_mode()
    def features(self, wav: Tensor) -> Tensor:
        """Frames (T', size) of one 16 kHz wave (T,)."""
        if self.model is None:
            return spectral.log_mel(wav.float())
        out = chunked_forward(self.model, wav.float(), layers=[self.layer])
        return out.hidden_states[0][0].float().clone()

    def file_features(self, path: str | Path) -> Tensor:
        """Frames of an audio file (resampled to 16 kHz); unreadable files raise a one-line AudioError."""
        wav, _ = load_audio(path, spectral.SAMPLE_RATE)
        return self.features(wav)


def parse_feature_flag(text: str) -> tuple[str, int | None]:
    """`logmel` or `UPSTREAM:LAYER` (a hub name or exported folder, then a hidden-state index)."""
    if text == LOG_MEL:
        return LOG_MEL, None
    name, sep, layer = text.rpartition(":")
    if not sep or not layer.isdigit() or not name:
        raise ConfigError(f"features {text!r}: expected 'logmel' or UPSTREAM:LAYER, e.g. hubert_tiny:3")
    return name, int(layer)

"""speechrep: self-supervised speech representation learning — pre-train, load, benchmark and apply upstreams."""
from speechrep.errors import AudioError, CheckpointError, ConfigError, SpeechrepError
from speechrep.upstream.loading import load_upstream
from speechrep.upstream.registry import list_upstreams

__version__ = "0.1.0"

__all__ = [
    "AudioError", "CheckpointError", "ConfigError", "SpeechrepError", "__version__", "list_upstreams",
    "load_upstream",
]

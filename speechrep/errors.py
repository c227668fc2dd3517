"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class SpeechrepError(Exception):
    """Base class for user-facing errors (bad input, bad config, missing file)."""


class AudioError(SpeechrepError, ValueError):
    """An audio file that cannot be used: missing, not audio, empty, truncated, NaN/Inf, wrong rate."""


class ConfigError(SpeechrepError, ValueError):
    """A configuration that cannot be used: unknown key, wrong type, missing value."""


class CheckpointError(SpeechrepError, ValueError):
    """A checkpoint that does not fit the model it is loaded into, or cannot be read safely."""


class TrainingError(SpeechrepError, FloatingPointError):
    """A training run that cannot go on: a non-finite loss or gradient (too high an LR, bad input)."""

"""Settings records: a folder refuses other settings, but a key added by a newer speechrep is accepted."""
from __future__ import annotations

from pathlib import Path

import pytest

from speechrep.storage import OutputError, check_settings


def test_recorded_keys_must_match_and_new_keys_are_accepted(tmp_path: Path) -> None:
    check_settings(tmp_path, {"method": "apc", "config.lr": 0.1})
    check_settings(tmp_path, {"method": "apc", "config.lr": 0.1})
    check_settings(tmp_path, {"method": "apc", "config.lr": 0.1, "config.train.parallel": "ddp"})  # newer key
    with pytest.raises(OutputError, match="config.lr: 0.1 -> 0.2"):
        check_settings(tmp_path, {"method": "apc", "config.lr": 0.2})
    with pytest.raises(OutputError, match="method"):
        check_settings(tmp_path, {"config.lr": 0.1})  # a recorded key that disappeared is a change

"""Fixtures shared by several test files; a test file's own fixture of the same name takes precedence.

Helpers that build data (`downstream_corpus.make_corpus`, `pretrain_corpus.unlabeled_corpus`) stay importable
modules beside this file, so a test can also call them with its own arguments.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from downstream_corpus import make_corpus


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for a module's tests, restored afterwards (`usefixtures("one_thread")`).

    Tiny models on a shared CPU: one thread avoids spinning on a busy second core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tone corpus of `downstream_corpus` with its `ks` subset only, built once per test module."""
    return make_corpus(tmp_path_factory.mktemp("corpus"), ("ks",))

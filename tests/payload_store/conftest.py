"""Fixtures of the payload store tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@pytest.fixture
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store directory on the tmpfs (the real thing), removed afterwards."""
    base = Path(os.environ.get("FB_TEST_SHM_DIR", SHM if SHM.is_dir() else tmp_path_factory.mktemp("shm")))
    root = base / f"fb-test-{os.getpid()}-{os.urandom(4).hex()}"
    yield root / "stream"
    for path in sorted(root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    root.rmdir()

"""Fixtures of the payload store tests: directories on the tmpfs (the real thing), removed afterwards."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@pytest.fixture
def shm_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root for stores (``FRAME_BUFFER_SHM_DIR``): a directory of this test's own on /dev/shm."""
    base = Path(os.environ.get("FB_TEST_SHM_DIR", SHM if SHM.is_dir() else tmp_path_factory.mktemp("shm")))
    root = base / f"fb-test-{os.getpid()}-{os.urandom(4).hex()}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store_dir(shm_root: Path) -> Path:
    """The directory of one stream's store."""
    return shm_root / "stream"

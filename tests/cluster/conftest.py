"""Cluster tests may start consumer processes; none may outlive its test, whatever the outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.helpers import ConsumerProcess


@pytest.fixture(autouse=True)
def _no_leftover_consumers() -> Iterator[None]:
    yield
    ConsumerProcess.kill_leftovers()

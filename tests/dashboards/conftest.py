"""The ``stack`` fixture: a real Redis, redis_exporter, ``frame-buffer run`` and Prometheus (see stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dashboards.stack import Prometheus, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The running stack; module-scoped, so nothing keeps loading the machine while other tests run."""
    with running_stack(tmp_path_factory.mktemp("monitoring")) as prom:
        yield prom

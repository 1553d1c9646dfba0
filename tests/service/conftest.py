"""Fixtures of the service tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import REDIS_URL


@pytest.fixture
def service_env(stream_name: str) -> Iterator[dict[str, str]]:
    """The machine's Redis and a stream of the test's own, deleted afterwards."""
    yield {"FRAME_BUFFER_STREAM": stream_name, "FRAME_BUFFER_REDIS_URL": REDIS_URL}
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(stream_name, f"{stream_name}:dlq")
    client.close()

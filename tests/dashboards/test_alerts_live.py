"""The alerts see a real failure: Redis stops under the running service, and the right alerts go off."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.dashboards.stack import Prometheus, running_stack

pytestmark = pytest.mark.slow
DEADLINE_S = 90.0
#: Alerts that must become pending (their ``for`` hold starts) once Redis is gone.
EXPECTED = {"RedisDown", "BreakerOpen", "FrameBufferNotReady"}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A stack of its own, so stopping its Redis cannot disturb the other tests."""
    with running_stack(tmp_path_factory.mktemp("redis-down")) as prom:
        yield prom


def active_alerts(prom: Prometheus) -> dict[str, str]:
    """Alert name -> state (pending or firing)."""
    return {alert["labels"]["alertname"]: alert["state"] for alert in prom.api("alerts")["alerts"]}


def test_redis_stopping_raises_the_redis_and_breaker_alerts(broken: Prometheus) -> None:
    """Healthy first: none of them active; with Redis stopped, each becomes pending within the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while EXPECTED & active_alerts(broken).keys():  # the first evaluations may still see start-up
        assert time.monotonic() < deadline, f"alerts on a healthy stack: {active_alerts(broken)}"
        time.sleep(0.5)
    broken.processes["redis"].stop()
    seen: dict[str, str] = {}
    while not seen.keys() >= EXPECTED and time.monotonic() < deadline:
        seen.update(active_alerts(broken))
        time.sleep(0.5)
    missing = EXPECTED - seen.keys()
    assert not missing, f"with Redis stopped, never active: {sorted(missing)}; active: {seen}\n{broken.logs()}"

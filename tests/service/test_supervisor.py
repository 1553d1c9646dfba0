"""The supervisor on real threads: deaths restarted and counted, crash loops, stalls, deaths while stopping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from frame_buffer import metrics
from frame_buffer.backoff import NoBackoff
from frame_buffer.supervisor import CRASH_LOOP_DEATHS, Heartbeat, Supervisor
from tests.servers import wait_until

MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
def supervisors() -> Iterator[MakeSupervisor]:
    """Makes supervisors whose threads are stopped and joined when the test ends: a supervised thread that
    outlives its test logs into pytest's closed capture stream ("--- Logging error ---")."""
    made: list[Supervisor] = []

    def make(**kwargs: Any) -> Supervisor:
        made.append(Supervisor(**kwargs))
        return made[-1]

    yield make
    units = [unit for supervisor in made for unit in supervisor.units]
    for unit in units:
        unit.stop.set()
    for unit in units:
        assert unit.thread is not None
        unit.thread.join(10)
        assert not unit.thread.is_alive(), f"thread {unit.name} outlived its test"


def restarts(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("frame_queue_thread_restarts_total", {"thread": name}) or 0.0


def unit(supervisor: Supervisor, name: str) -> dict[str, object]:
    return next(t for t in supervisor.threads() if t["thread"] == name)


def test_a_loop_that_dies_is_logged_with_its_traceback_counted_and_run_again(
    caplog: pytest.LogCaptureFixture, supervisors: MakeSupervisor
) -> None:
    supervisor = supervisors(backoff=NoBackoff())
    stop, runs = threading.Event(), []

    def loop(heartbeat: Heartbeat) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise SystemExit("ended by the loop")  # not an Exception: a plain thread would end without a word
        stop.wait()

    with caplog.at_level(logging.ERROR, logger="frame_buffer.supervisor"):
        thread = supervisor.spawn("unit-dies-once", loop, stop)
        wait_until(lambda: len(runs) == 2, 10, "the second run")
    assert restarts("unit-dies-once") == 1
    assert unit(supervisor, "unit-dies-once")["restarts"] == 1
    (record,) = caplog.records
    assert record.getMessage().startswith("thread unit-dies-once died (1 in a row), restarting in 0.0s: SystemExit")
    assert record.exc_info is not None
    assert supervisor.problems() == []
    stop.set()
    thread.join(10)
    assert unit(supervisor, "unit-dies-once")["state"] == "finished" and supervisor.problems() == []


def test_a_crash_loop_is_a_problem(supervisors: MakeSupervisor) -> None:
    supervisor = supervisors(backoff=NoBackoff())
    stop, deaths = threading.Event(), []

    def loop(heartbeat: Heartbeat) -> None:
        deaths.append(1)
        if len(deaths) > CRASH_LOOP_DEATHS:
            stop.wait()
            return  # ends with the test; a death after it would be logged to a capture already closed
        raise RuntimeError(f"death {len(deaths)}")

    thread = supervisor.spawn("unit-crash-loop", loop, stop)
    wait_until(lambda: supervisor.problems() != [], 10, "the crash loop to show")
    assert supervisor.problems() == [{"thread": "unit-crash-loop",
                                      "why": f"crash loop: died {CRASH_LOOP_DEATHS} times in a row, last: "
                                             f"RuntimeError: death {CRASH_LOOP_DEATHS}"}]
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_a_loop_without_heartbeat_past_the_limit_is_stalled_and_recovers_when_it_beats(
    supervisors: MakeSupervisor,
) -> None:
    supervisor = supervisors(stall_limit_s=0.2)
    stop, stuck = threading.Event(), threading.Event()

    def loop(heartbeat: Heartbeat) -> None:
        stuck.wait()
        while not stop.wait(0.01):
            heartbeat.beat()

    supervisor.spawn("unit-stalls", loop, stop)
    wait_until(lambda: supervisor.problems() != [], 10, "the stall to show")
    (problem,) = supervisor.problems()
    assert problem["thread"] == "unit-stalls" and problem["why"].startswith("no progress for")
    stuck.set()
    wait_until(lambda: supervisor.problems() == [], 10, "the stall to clear")
    stop.set()


def test_a_loop_that_dies_while_stopping_is_dead_not_restarted(supervisors: MakeSupervisor) -> None:
    supervisor = supervisors(backoff=NoBackoff())
    stop = threading.Event()
    stop.set()

    def loop(heartbeat: Heartbeat) -> None:
        raise ValueError("broken at the end")

    thread = supervisor.spawn("unit-dies-at-stop", loop, stop)
    thread.join(10)
    assert supervisor.problems() == [{"thread": "unit-dies-at-stop",
                                      "why": "died and is not restarted: ValueError: broken at the end"}]
    assert restarts("unit-dies-at-stop") == 0

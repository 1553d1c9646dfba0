"""Every thread the service starts runs supervised: a death is logged, counted and restarted; a stall is seen.

Why: a worker thread that died on a hostile entry left ``/healthz`` green while nothing was consumed any more
(issue 13). Now each long-running loop (workers, sources, the producer's publisher, the stats loop, the HTTP
server) runs inside :meth:`Supervisor.spawn`:

- an exception of any kind (``BaseException`` too: ``SystemExit`` in a thread would otherwise end it without a
  word) is logged with its traceback, counted in ``frame_queue_thread_restarts_total{thread}``, and the loop is
  started again in the same thread after :data:`RESTART_BACKOFF` (the project's capped exponential backoff);
- each loop beats its :class:`Heartbeat` at least every few seconds while it makes progress or waits on
  purpose; :meth:`Supervisor.problems` reports a loop whose heartbeat is older than the stall limit, a loop in
  a crash loop (:data:`CRASH_LOOP_DEATHS` deaths in a row, none of them after a stable run), and a loop that
  died while its stop was already requested (not restarted). ``/healthz`` answers 503 with these problems, so
  Docker restarts the container.

A loop that returns normally (a file source at its end) is finished, not a problem.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from frame_buffer import metrics
from frame_buffer.backoff import Backoff, ExponentialBackoff

log = logging.getLogger("frame_buffer.supervisor")

#: Default stall limit: a loop whose heartbeat is older than this makes /healthz 503. Above the longest wait a
#: loop makes on purpose between two beats (publish under backpressure waits ``publish_timeout_s``, 30 s).
STALL_LIMIT_S = 60.0
#: Delay before restarting a loop that died, by consecutive deaths: 0.5, 1, 2, 4 ... capped at 30 s.
RESTART_BACKOFF: Backoff = ExponentialBackoff(0.5, 30.0)
#: Deaths in a row that make a crash loop (/healthz 503, while restarts go on).
CRASH_LOOP_DEATHS = 5
#: A loop that ran this long before it died starts its count of deaths in a row again.
STABLE_RUN_S = 60.0


class Heartbeat:
    """When a loop last showed progress (monotonic seconds); ``beat()`` is a cheap attribute store."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self.last


#: What a supervised loop is: called with its heartbeat, returns when its stop is set (or its work ends).
Loop = Callable[[Heartbeat], object]


@dataclass
class Unit:
    """One supervised loop and what is known of it."""

    name: str
    loop: Loop
    stop: threading.Event
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    state: str = "running"  # running, restarting, finished, dead
    deaths_in_a_row: int = 0
    restarts: int = 0
    last_error: str = ""


class Supervisor:
    """Starts supervised threads and tells what is wrong with them.

    Args:
        stall_limit_s: heartbeat age that counts as a stall.
        backoff: delay before a restart, by deaths in a row.
    """

    def __init__(self, stall_limit_s: float = STALL_LIMIT_S, backoff: Backoff = RESTART_BACKOFF) -> None:
        self.stall_limit_s = stall_limit_s
        self.backoff = backoff
        self.units: list[Unit] = []
        self._lock = threading.Lock()

    def spawn(self, name: str, loop: Loop, stop: threading.Event) -> threading.Thread:
        """Run ``loop`` in a daemon thread named ``name``, restarted after a death until ``stop`` is set."""
        unit = Unit(name, loop, stop)
        metrics.thread_restarts.labels(thread=name)
        thread = threading.Thread(target=self._run, args=(unit,), name=name, daemon=True)
        unit.thread = thread
        thread.start()  # before the unit is listed: a health check must never see a thread not yet started
        with self._lock:
            self.units.append(unit)
        return thread

    def _run(self, unit: Unit) -> None:
        while True:
            started = unit.started = time.monotonic()
            unit.state = "running"
            unit.heartbeat.beat()
            try:
                unit.loop(unit.heartbeat)
            except BaseException as exc:  # whatever ends the loop (SystemExit too): log, count, restart
                unit.last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started >= STABLE_RUN_S:
                    unit.deaths_in_a_row = 0
                unit.deaths_in_a_row += 1
                if unit.stop.is_set():
                    unit.state = "dead"
                    log.error("thread %s died while stopping, not restarted: %s", unit.name, unit.last_error,
                              exc_info=True)
                    return
                delay = self.backoff.compute(unit.deaths_in_a_row)
                unit.state = "restarting"
                metrics.thread_restarts.labels(thread=unit.name).inc()
                log.error("thread %s died (%d in a row), restarting in %.1fs: %s", unit.name,
                          unit.deaths_in_a_row, delay, unit.last_error, exc_info=True)
                if unit.stop.wait(delay):
                    unit.state = "finished"
                    return
                unit.restarts += 1
                continue
            unit.state = "finished"
            return

    def problems(self) -> list[dict[str, Any]]:
        """Threads that make the process unhealthy, each with why; empty when all is well."""
        found: list[dict[str, Any]] = []
        with self._lock:
            units = list(self.units)
        for unit in units:
            why = ""
            if unit.state == "dead" or (unit.thread is not None and not unit.thread.is_alive()
                                        and unit.state not in ("finished", "dead")):
                why = f"died and is not restarted: {unit.last_error or 'thread gone'}"
            elif unit.deaths_in_a_row >= CRASH_LOOP_DEATHS and (
                    unit.state == "restarting"
                    or (unit.state == "running" and time.monotonic() - unit.started < STABLE_RUN_S)):
                why = f"crash loop: died {unit.deaths_in_a_row} times in a row, last: {unit.last_error}"
            elif unit.state == "running" and unit.heartbeat.age() > self.stall_limit_s:
                why = f"no progress for {unit.heartbeat.age():.0f}s (stall limit {self.stall_limit_s:g}s)"
            if why:
                found.append({"thread": unit.name, "why": why})
        return found

    def threads(self) -> list[dict[str, Any]]:
        """Every supervised thread: state, restarts, heartbeat age, last error."""
        with self._lock:
            units = list(self.units)
        return [{"thread": u.name, "state": u.state, "restarts": u.restarts,
                 "heartbeat_age_s": round(u.heartbeat.age(), 3), "last_error": u.last_error} for u in units]

"""Worker processes started by the service (``FRAME_BUFFER_WORKER_PROCESSES=N``): handling off the ingest GIL.

Each child is ``frame-buffer run --role workers`` in a new interpreter (``subprocess``, never ``fork``: forking
a process that already runs threads copies locks held by threads that do not exist in the child). A child is
the same program as a workers container, so one code path serves both layouts, and it drains, logs and
exits by itself. What the parent passes it:

- every setting as ``FRAME_BUFFER_*`` variables (flags and the YAML file included), with role ``workers``,
  loopback HTTP on a free port and the consumer prefix ``<prefix>-<process>``: its consumers are
  ``<prefix>-<process>-<index>``, the same names after a restart, so a restarted child claims back its own
  pending entries at once;
- a status pipe (``--status-fd``) on which the child writes its pid and HTTP port once started, and its
  counters and histograms once drained: the parent's totals then include every frame the child acked, so a
  ``soak`` or bench that audits them after the stop sees the drain's frames too;
- its stdin, a pipe the parent never writes: end of file there means the parent is gone, and the child drains.

Each child is watched by a thread of the parent's :class:`~frame_buffer.supervisor.Supervisor`: a child that
exits while not asked to is a death of that thread, so it is logged, counted
(``frame_queue_thread_restarts_total{thread="worker-process-<n>"}``), started again with the supervisor's
backoff, and a crash loop makes ``/healthz`` 503. Every :data:`POLL_S` the watcher reads the child's
``/healthz``, ``/readyz`` and ``/metrics`` on loopback and beats its heartbeat when the child answered, so a
child that stops answering is a stall of the parent. At the stop the parent sends SIGTERM to every child after
its own producer is flushed and waits for their drains; a child's failure is the parent's exit code.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from frame_buffer import metrics_merge
from frame_buffer.config import Settings
from frame_buffer.supervisor import Heartbeat, Supervisor

log = logging.getLogger("frame_buffer.service")

#: How often a watcher reads its child's health, readiness and metrics.
POLL_S = 2.0
#: Limit of one of those reads; a child that does not answer within it misses a heartbeat.
READ_TIMEOUT_S = 2.0
#: Time a child gets beyond the parent's drain limit to end: its own drain limit counts from the SIGTERM the
#: parent sends after flushing its producer, and its interpreter takes a moment to exit.
EXIT_MARGIN_S = 2.0
#: The child's program: the CLI's ``main`` in a fresh interpreter (the same one, with the same sys.path).
CHILD_CODE = "import sys; from frame_buffer.cli import main; sys.exit(main(sys.argv[1:]))"


class ChildDied(Exception):
    """A worker process exited while the service was not stopping (the supervisor restarts its watcher)."""


@dataclass
class Child:
    """One worker process slot: the same consumer names across restarts, what its last reads said."""

    index: int
    prefix: str
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    port: int | None = None
    started: bool = False
    health: dict[str, Any] | None = None
    readiness: dict[str, Any] | None = None
    #: Its metrics at the last read, and what the incarnations before this one had counted.
    snapshot: metrics_merge.Families = field(default_factory=list)
    carried: metrics_merge.Families = field(default_factory=list)
    #: Set when its watcher has read the status pipe to its end (the final counters are in ``snapshot``).
    followed: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return f"worker-process-{self.index}"


def describe(code: int) -> str:
    """``exit code 1`` or ``signal SIGKILL``: how a child ended."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class WorkerProcesses:
    """Starts, watches, restarts and stops the worker processes of one service."""

    def __init__(self, settings: Settings, supervisor: Supervisor) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.stopping = threading.Event()
        self.children = [Child(index, f"{settings.consumer_prefix}-{index}")
                         for index in range(settings.worker_processes)]
        self._lock = threading.Lock()

    def start(self) -> None:
        for child in self.children:
            self.supervisor.spawn(child.name, lambda beat, c=child: self._watch(c, beat),  # type: ignore[misc]
                                  self.stopping)

    def environment(self, child: Child) -> dict[str, str]:
        """The child's environment: ours without FRAME_BUFFER_* variables, then every setting of the child."""
        settings = replace(self.settings, role="workers", worker_processes=0, consumer_prefix=child.prefix,
                           http_host="127.0.0.1", http_port=0, sources=(), cpu_wake_latency_us=None)
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("FRAME_BUFFER_")}
        return {**inherited, **settings.environment()}

    # -- one child's life, in its watcher thread ---------------------------------------------------------
    def _watch(self, child: Child, heartbeat: Heartbeat) -> None:
        with self._lock:  # a stop either comes before this start, or finds the process to signal
            if self.stopping.is_set():
                return
            status_read, status_write = os.pipe()
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", CHILD_CODE, "run", "--status-fd", str(status_write)],
                    env=self.environment(child), stdin=subprocess.PIPE, pass_fds=(status_write,),
                    start_new_session=True)  # a Ctrl-C reaches the parent only: it stops the children in order
            finally:
                os.close(status_write)
            child.process, child.pid, child.port, child.started = process, process.pid, None, False
            child.health = child.readiness = None
            child.followed.clear()
        log.info("%s started: pid %d, consumers %s-<n>", child.name, process.pid, child.prefix)
        try:
            self._follow(child, status_read, heartbeat)
        finally:
            os.close(status_read)
            child.followed.set()
        process.wait()
        if self.stopping.is_set():
            return  # the stop waits for the child and judges its exit code
        started = child.started
        self._retire(child)
        how = "exited" if started else "ended while starting,"
        raise ChildDied(f"{child.name} (pid {process.pid}) {how} with {describe(process.returncode)}")

    def _follow(self, child: Child, status: int, heartbeat: Heartbeat) -> None:
        """Read the child's status pipe until it closes (the child ended), and its endpoints every POLL_S.

        The pipe carries ``{"pid", "port"}`` once started and ``{"final": {"metrics"}}`` after its drain; the
        latter are the counts the parent keeps, so frames acked during the drain are not lost from its totals.
        Beats while the child starts (imports take seconds), then whenever the child answered.
        """
        received = b""
        while True:
            readable, _, _ = select.select([status], [], [], POLL_S)
            if readable:
                data = os.read(status, 65536)
                if not data:
                    return
                received += data
                *lines, received = received.split(b"\n")
                for line in lines:
                    self._report(child, line)
            # Starting (imports take seconds) or draining, waiting is this thread's work; else the child must answer.
            if self.stopping.is_set() or not child.started or self._read(child):
                heartbeat.beat()

    def _report(self, child: Child, line: bytes) -> None:
        """One line of the child's status pipe (the child is our own program; a garbled line is logged)."""
        try:
            report = json.loads(line)
            if "final" in report:
                child.snapshot = metrics_merge.parse(report["final"]["metrics"], thread_prefix=f"{child.name}/")
            else:
                child.port, child.started = int(report["port"]), True
                self._read(child)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: unreadable status line %r: %s", child.name, line[:200], exc)

    def _read(self, child: Child) -> bool:
        """Read the child's /healthz, /readyz and /metrics; True when it answered all three."""
        health, readiness, text = (_get(child.port, path) for path in ("/healthz", "/readyz", "/metrics"))
        if health is None or readiness is None or text is None:
            return False
        try:  # a child that exits while answering may leave a body cut short
            child.health, child.readiness = json.loads(health), json.loads(readiness)
            child.snapshot = metrics_merge.parse(text, thread_prefix=f"{child.name}/")
        except ValueError:
            return False
        return True

    def _retire(self, child: Child) -> None:
        """The child is gone: its counts so far are carried, so the parent's counters never go down."""
        child.carried = metrics_merge.add(child.carried, child.snapshot)
        child.snapshot, child.started, child.health, child.readiness = [], False, None, None

    # -- what the parent reports -------------------------------------------------------------------------
    def problems(self) -> list[dict[str, Any]]:
        """The children's own /healthz problems, each naming the process."""
        found: list[dict[str, Any]] = []
        for child in self.children:
            if child.started and child.health is not None:
                found.extend({**problem, "process": child.name} for problem in child.health.get("problems", []))
        return found

    def reasons(self) -> list[str]:
        """Why the children are not all ready: starting, restarting, or their own /readyz reasons."""
        found: list[str] = []
        for child in self.children:
            if not child.started or child.readiness is None:
                found.append(f"{child.name} is starting")
            else:
                found.extend(f"{child.name}: {reason}" for reason in child.readiness.get("reasons", []))
        return found

    def states(self) -> list[dict[str, Any]]:
        return [{"process": c.name, "pid": c.pid, "port": c.port, "started": c.started,
                 "consumer_prefix": c.prefix} for c in self.children]

    def refresh(self) -> None:
        """Read every started child's endpoints now (a sampler that wants counts fresher than POLL_S)."""
        for child in self.children:
            if child.started and not self.stopping.is_set():
                self._read(child)

    def families(self) -> list[metrics_merge.Families]:
        """Every child's counters and histograms: what its incarnations counted, as of the last read."""
        return [metrics_merge.add(child.carried, child.snapshot) for child in self.children]

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self, remaining: Callable[[], float], grace_s: float) -> bool:
        """SIGTERM to every child, then wait for each within ``remaining()`` (at least ``grace_s``) and
        :data:`EXIT_MARGIN_S`; True when every child drained cleanly. A child still running then is killed."""
        with self._lock:
            self.stopping.set()
            running = [(c, c.process) for c in self.children if c.process is not None and c.process.poll() is None]
        for _, process in running:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile; its exit code is read below
                process.send_signal(signal.SIGTERM)
        clean = True
        for child, process in running:
            try:
                code = process.wait(max(remaining(), grace_s) + EXIT_MARGIN_S)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) did not drain within the drain timeout; killed, what it holds stays "
                          "pending for its consumers' next start", child.name, process.pid)
                process.kill()
                process.wait()
                child.followed.wait(READ_TIMEOUT_S)
                clean = False
                continue
            child.followed.wait(READ_TIMEOUT_S)  # its watcher reads the final counters up to the pipe's end
            if code == 0 or (code == -signal.SIGTERM and not child.started):
                log.info("%s (pid %d) stopped", child.name, process.pid)
            else:
                log.error("%s (pid %d) ended its drain with %s", child.name, process.pid, describe(code))
                clean = False
        for child in self.children:
            if child.process is not None and child.process.stdin is not None:
                child.process.stdin.close()
        return clean


def _get(port: int | None, path: str) -> str | None:
    """The body of a loopback GET (a 503 is an answer too); None when it did not answer."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=READ_TIMEOUT_S) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except (OSError, ValueError, http.client.HTTPException):  # HTTPException: a child ending mid-answer
        return None


def watch_parent(stop: Callable[[], None]) -> threading.Thread:
    """In a child: call ``stop`` when stdin ends (the parent is gone, or closed it at its own stop)."""

    def wait_for_end() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts the interpreter's exit.
        while os.read(0, 4096):
            pass
        stop()

    thread = threading.Thread(target=wait_for_end, name="parent-watch", daemon=True)
    thread.start()
    return thread

"""SIGTERM and SIGINT at any moment after ``run`` began end in an orderly drain and exit 0 (issue 13, item 2).

Real processes; the moment of the signal is the input of each run (so these tests sleep for it on purpose);
what is asserted is only the outcome: the exit code and the "stopped cleanly" line.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers import wait_until
from tests.service.running import RunningService

#: Runs of the SIGTERM test, their delays spread evenly over 0 to 500 ms after the first /healthz 200.
RUNS = 21
PARALLEL = 3


def small(service_env: dict[str, str]) -> dict[str, str]:
    """A cheap service: one worker, one tiny synthetic camera."""
    return {**service_env, "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=50:size=16x16", "FRAME_BUFFER_WORKERS": "1"}


def signal_after_healthz(tmp: Path, env: dict[str, str], index: int, delay: float, signum: int) -> str:
    """One run: start, wait for /healthz 200, wait ``delay``, signal; '' when it stopped cleanly, else why not."""
    service = RunningService(tmp, env, name=f"run{index}")
    try:
        time.sleep(delay)  # the moment of the signal is what this run tests
        code = service.terminate(signum=signum)
    finally:
        service.kill()
    log = service.log()
    if code != 0 or "stopped cleanly" not in log:
        return f"run {index}: {signal.Signals(signum).name} {delay * 1000:.0f} ms after /healthz: exit {code}\n{log}"
    return ""


def run_many(tmp: Path, env: dict[str, str], runs: int, signum: int) -> list[str]:
    delays = [0.5 * index / (runs - 1) for index in range(runs)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = pool.map(lambda i: signal_after_healthz(tmp, env, i, delays[i], signum), range(runs))
        return [outcome for outcome in outcomes if outcome]


def test_sigterm_0_to_500_ms_after_the_first_healthz_always_drains_and_exits_0(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    failures = run_many(tmp_path, small(service_env), RUNS, signal.SIGTERM)
    assert not failures, "\n".join(failures)


def test_sigint_0_to_500_ms_after_the_first_healthz_always_drains_and_exits_0(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    failures = run_many(tmp_path, small(service_env), 6, signal.SIGINT)
    assert not failures, "\n".join(failures)


def handler_installed(pid: int) -> bool:
    """True once the process catches SIGTERM (its bit in SigCgt): from then on ``run``'s handler is in place."""
    caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_start_up_checks_run_stops_before_starting_and_exits_0(
    tmp_path: Path, service_env: dict[str, str], signum: int
) -> None:
    # A camera that accepts the connection and never answers holds the start-up probe for its open timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/live"
        service = RunningService(tmp_path, {**small(service_env), "FRAME_BUFFER_SOURCES": f"rtsp:cam0:url={url}"},
                                 wait=False)
        try:
            wait_until(lambda: handler_installed(service.process.pid), 30, "the stop handler", interval=0.002)
            code = service.terminate(signum=signum)
        finally:
            service.kill()
    assert code == 0, service.log()
    assert "stop signal during start-up: not starting" in service.messages()
    assert "stopped cleanly" in service.messages()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_threads_start_drains_at_once_and_exits_0(
    tmp_path: Path, service_env: dict[str, str], signum: int
) -> None:
    service = RunningService(tmp_path, small(service_env), wait=False)
    try:
        wait_until(lambda: "serving /metrics" in service.log(), 30, "the log line 'serving /metrics'", interval=0.002)
        code = service.terminate(signum=signum)
    finally:
        service.kill()
    assert code == 0, service.log()
    assert "stopped cleanly" in service.messages()


def test_a_second_signal_during_the_drain_does_not_kill_it(tmp_path: Path, service_env: dict[str, str]) -> None:
    service = RunningService(tmp_path, small(service_env))
    try:
        service.process.send_signal(signal.SIGTERM)
        service.process.send_signal(signal.SIGINT)
        service.process.send_signal(signal.SIGTERM)
        code = service.process.wait(60)
    finally:
        service.kill()
    assert code == 0, service.log()
    messages = service.messages()
    assert "stopped cleanly" in messages
    assert any("more stop signals came during the drain; ignored" in message for message in messages)


WAKE_SCRIPT = """
import signal, sys, threading
from frame_buffer.stop_signals import StopSignals

signals = StopSignals()
ready, go = threading.Event(), threading.Event()

def other() -> None:
    ready.set()
    go.wait()
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread, not the main one
    threading.Event().wait(30)  # stays alive: its handler cannot be the main thread's

thread = threading.Thread(target=other, daemon=True)
thread.start()
ready.wait()
go.set()
number = signals.wait(timeout=60)
print(signal.Signals(number).name if number else "timeout", flush=True)
signals.close()
"""


def test_a_signal_delivered_to_another_thread_wakes_the_main_thread() -> None:
    """The failure of issue 13: a signal given to a thread other than the main one must neither kill the process
    nor be left unseen by the main thread waiting for it."""
    result = subprocess.run([sys.executable, "-c", WAKE_SCRIPT], capture_output=True, text=True, timeout=90,
                            check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "SIGTERM"), result.stderr

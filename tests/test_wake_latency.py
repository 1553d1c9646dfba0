"""The PM QoS wake-up latency request, against the machine's real ``/dev/cpu_dma_latency``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from frame_buffer.config import ConfigError, Settings
from frame_buffer.wake_latency import NO_BOUND_US, WakeLatencyRequest, WakeLatencyUnavailable, current_bound_us

HOLDER = """
import sys, time
from frame_buffer.wake_latency import WakeLatencyRequest
request = WakeLatencyRequest(0)
print("held", flush=True)
time.sleep(600)
"""


def test_a_request_bounds_the_machine_until_closed_and_the_tightest_wins(unbounded: int) -> None:
    with WakeLatencyRequest(3) as loose:
        assert current_bound_us() == 3
        with WakeLatencyRequest(0):
            assert current_bound_us() == 0
        assert current_bound_us() == 3
    assert current_bound_us() == unbounded
    loose.close()  # a second close is harmless
    assert current_bound_us() == unbounded


def test_a_request_ends_with_its_process_even_when_killed(unbounded: int) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert current_bound_us() == 0
    finally:
        holder.kill()
        holder.wait(30)
    assert current_bound_us() == unbounded


def test_an_unusable_device_or_bound_is_refused_with_what_was_wrong(tmp_path: Path) -> None:
    absent = tmp_path / "cpu_dma_latency"
    with pytest.raises(WakeLatencyUnavailable, match=f"latency of 0 us: {absent}: No such file or directory"):
        WakeLatencyRequest(0, absent)
    with pytest.raises(WakeLatencyUnavailable, match="/dev/full: No space left on device"):  # opens, refuses writes
        WakeLatencyRequest(0, Path("/dev/full"))
    with pytest.raises(ValueError, match="must be 0 to 2000000000 us, got -1"):
        WakeLatencyRequest(-1)
    with pytest.raises(ValueError, match="got 2000000001"):
        WakeLatencyRequest(NO_BOUND_US + 1)


def test_the_setting_is_off_by_default_and_names_itself_when_wrong(tmp_path: Path) -> None:
    assert Settings.load(environ={}).cpu_wake_latency_us is None
    assert Settings.load(environ={}).wake_latency_request() is None
    assert Settings.load(environ={"FRAME_BUFFER_CPU_WAKE_LATENCY_US": "0"}).cpu_wake_latency_us == 0
    config = tmp_path / "fb.yml"
    config.write_text("cpu_wake_latency_us: null\n")
    assert Settings.load(config, environ={}).cpu_wake_latency_us is None
    config.write_text("cpu_wake_latency_us: 20\n")
    assert Settings.load(config, environ={}).cpu_wake_latency_us == 20
    with pytest.raises(ConfigError, match="FRAME_BUFFER_CPU_WAKE_LATENCY_US: must be 0 to 2000000000"):
        Settings.load(environ={"FRAME_BUFFER_CPU_WAKE_LATENCY_US": "-1"})
    with pytest.raises(ConfigError, match="FRAME_BUFFER_CPU_WAKE_LATENCY_US: must be an integer, got 'low'"):
        Settings.load(environ={"FRAME_BUFFER_CPU_WAKE_LATENCY_US": "low"})
    absent = tmp_path / "cpu_dma_latency"
    with pytest.raises(ConfigError, match=f"FRAME_BUFFER_CPU_WAKE_LATENCY_US: cannot hold .*{absent}"):
        Settings.load(environ={"FRAME_BUFFER_CPU_WAKE_LATENCY_US": "0"}).wake_latency_request(absent)

"""The host program of ``frame_buffer_host_cpu_wake_latency_us`` (roles/frame_buffer/files/cpu_wake_latency.py),
run for real against this machine's /dev/cpu_dma_latency. The molecule scenario installs it with its unit; systemd
does not run this test machine, so the unit itself is checked there with ``systemd-analyze verify`` only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from frame_buffer.wake_latency import DEVICE, current_bound_us
from tests.deploy.conftest import ROOT, unavailable

PROGRAM = ROOT / "roles" / "frame_buffer" / "files" / "cpu_wake_latency.py"


@pytest.fixture
def device() -> Path:
    if not DEVICE.exists():
        unavailable(f"{DEVICE} is missing (not Linux, or a kernel without PM QoS)")
    if os.geteuid() != 0:
        unavailable(f"{DEVICE} is root's")
    return DEVICE


@pytest.fixture
def holder(device: Path) -> Iterator[subprocess.Popen[str]]:
    """The program holding 1234 us, once it has said so (the request is made before it prints)."""
    proc = subprocess.Popen(
        [sys.executable, PROGRAM, "1234"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("cpu_wake_latency: holding a CPU wake-up latency bound of 1234 us"), line
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_holds_the_bound_until_sigterm(holder: subprocess.Popen[str], device: Path) -> None:
    # Another holder of a tighter bound (a bench with --cpu-wake-latency-us 0) may run: the bound is the minimum.
    assert current_bound_us(device) <= 1234
    assert Path(f"/proc/{holder.pid}/fd").is_dir()
    assert str(device) in {os.readlink(fd) for fd in Path(f"/proc/{holder.pid}/fd").iterdir()}
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=10) == 0


@pytest.mark.parametrize("args", [[], ["-1"], ["2000001"], ["50us"], ["²"], ["1", "/dev/null", "x"]])
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, PROGRAM, *args], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "0 to 2000000" in proc.stderr


def test_a_device_it_cannot_open_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "cpu_dma_latency"
    proc = subprocess.run(
        [sys.executable, PROGRAM, "0", str(missing)], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"cpu_wake_latency: cannot hold 0 us on {missing}: No such file or directory"]

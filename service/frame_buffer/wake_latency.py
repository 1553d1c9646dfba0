"""A Linux PM QoS request that bounds how long an idle CPU may take to wake up, held while a process runs.

Why: a frame crosses three processes (producer, Redis, consumer), and each of them sleeps between frames. On a
machine whose idle CPUs halt, every crossing waits for a CPU to come back from halt with cold caches. Measured
on this project's 2-vCPU Firecracker VM (cpuidle governor ``haltpoll``, ``guest_halt_poll_ns=0``): p99 of a
100 KB frame at 1000 frames/s was 0.8 to 11.7 ms with idle CPUs halting, and 0.54 to 0.98 ms with a request
of 0 us held, in runs alternated in the same minutes; raw redis-py alike (``docs/performance.md``).

The request goes through ``/dev/cpu_dma_latency``, the interface that cyclictest and tuned's
``latency-performance`` profile use: it holds while the file stays open and ends with the process, whatever
way it ends. A bound of 0 keeps idle CPUs polling instead of halting. The cost is CPU time and power on every
CPU of the machine, not only the ones this process runs on, so it is off unless asked for.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType

from frame_buffer.errors import FrameBufferError

DEVICE = Path("/dev/cpu_dma_latency")
IDLE_GOVERNOR = Path("/sys/devices/system/cpu/cpuidle/current_governor_ro")
#: The kernel's value for "no bound requested" (PM_QOS_CPU_LATENCY_DEFAULT_VALUE, 2000 s in us).
NO_BOUND_US = 2_000_000_000


class WakeLatencyUnavailable(FrameBufferError, RuntimeError):
    """The request cannot be made here (not Linux, or no write access to the device); the message names it."""


class WakeLatencyRequest:
    """Keeps idle CPUs able to wake within ``microseconds`` until :meth:`close` (or the process ends).

    Args:
        microseconds: the bound, 0 to ``NO_BOUND_US``; 0 keeps idle CPUs polling.
        device: the PM QoS device; a parameter so that the failure of a missing one can be tested.

    Raises:
        WakeLatencyUnavailable: the device cannot be opened or written, with its path and the reason.
        ValueError: ``microseconds`` is out of range.
    """

    def __init__(self, microseconds: int, device: Path = DEVICE) -> None:
        if not 0 <= microseconds <= NO_BOUND_US:
            raise ValueError(f"a CPU wake-up latency must be 0 to {NO_BOUND_US} us, got {microseconds}")
        self.microseconds = microseconds
        self._fd: int | None = None
        try:
            self._fd = os.open(device, os.O_WRONLY)
            os.write(self._fd, struct.pack("=i", microseconds))
        except OSError as exc:
            self.close()
            raise WakeLatencyUnavailable(
                f"cannot hold a CPU wake-up latency of {microseconds} us: {device}: {exc.strerror} "
                f"(it needs Linux and write access to the device, usually root)") from exc

    def close(self) -> None:
        """End the request; closing twice is harmless."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WakeLatencyRequest:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def current_bound_us(device: Path = DEVICE) -> int:
    """The bound in force on the machine now: the tightest request anyone holds (``NO_BOUND_US`` if none)."""
    with open(device, "rb") as file:
        value: int = struct.unpack("=i", file.read(4))[0]
    return value


def idle_governor() -> str:
    """The cpuidle governor that decides how idle CPUs sleep (``haltpoll``, ``menu``, ...), or ``unknown``."""
    try:
        return IDLE_GOVERNOR.read_text().strip()
    except OSError:
        return "unknown"

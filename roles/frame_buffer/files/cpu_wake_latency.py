#!/usr/bin/python3
"""Holds a host-wide bound on how long idle CPUs take to wake up, until it is stopped.

Why a host program: the bound is one PM QoS request for the whole machine, made by keeping
/dev/cpu_dma_latency open after writing the bound to it as a 32-bit int (what cyclictest and tuned's
latency-performance profile do). The service's containers run as an unprivileged user and cannot open the
device, so the frame_buffer role installs this file with a systemd unit on the Docker host
(frame_buffer_host_cpu_wake_latency_us). Python's standard library only: the host needs nothing new.
The request ends when the file is closed, which the kernel does however this process ends.

Usage: cpu_wake_latency.py MICROSECONDS [DEVICE]
Exit codes: 0 stopped by SIGTERM or SIGINT, 1 the device cannot be opened or written, 2 a bad argument.
"""

import os
import signal
import struct
import sys

MAX_US = 2_000_000
USAGE = f"usage: cpu_wake_latency.py MICROSECONDS [DEVICE] (MICROSECONDS: an integer 0 to {MAX_US})"


def main(argv: list[str]) -> int:
    """Parse, write the bound, then sleep until a signal; the open file is the request."""
    if len(argv) not in (1, 2) or not (argv[0].isascii() and argv[0].isdigit()) or int(argv[0]) > MAX_US:
        print(f"cpu_wake_latency: bad arguments {argv!r}; {USAGE}", file=sys.stderr)
        return 2
    microseconds = int(argv[0])
    device = argv[1] if len(argv) == 2 else "/dev/cpu_dma_latency"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        fd = os.open(device, os.O_WRONLY)
        # Exactly 4 bytes: the kernel reads a 4-byte write as a binary s32 (any other length as hex text).
        os.write(fd, struct.pack("=i", microseconds))
    except OSError as exc:
        print(f"cpu_wake_latency: cannot hold {microseconds} us on {device}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"cpu_wake_latency: holding a CPU wake-up latency bound of {microseconds} us on {device}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

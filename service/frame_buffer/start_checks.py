"""Settings that cannot work together, refused before anything starts, with one line naming them.

A frame size the settings would refuse frame by frame (too large for the codec, or for the producer's whole
memory budget) is checked here once, for the service's synthetic sources and the commands' ``--size`` alike:
the frame-by-frame errors cannot name the settings, this can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from frame_buffer.config import Settings, name_problem
from frame_buffer.errors import ConfigError
from frame_buffer.flow.buffer import FRAME_OVERHEAD_BYTES
from frame_buffer.sources import SourceSpec, parse_size
from frame_buffer.supervisor import STALL_LIMIT_S

#: Room left for a frame's encoded header (camera, sequence, times, shape, checksum; well under this without
#: large metadata) when a frame size is checked against the memory budget.
HEADER_ALLOWANCE_BYTES = 512


def check_frame_size(settings: Settings, shape: tuple[int, ...], where: str) -> None:
    """Refuse frames of ``shape`` (rows, columns, channels) that the codec or the memory budget would refuse.

    ``where`` starts the message: what gave the size (``--size``, or the setting and source).
    """
    nbytes = math.prod(shape)
    frame = f"{where}: a {shape[1]}x{shape[0]} RGB frame is {nbytes} bytes"
    if nbytes > settings.max_frame_bytes:
        raise ConfigError(f"{frame}, over max_frame_bytes {settings.max_frame_bytes} (FRAME_BUFFER_MAX_FRAME_BYTES)")
    if nbytes + HEADER_ALLOWANCE_BYTES + FRAME_OVERHEAD_BYTES > settings.buffer_budget_bytes:
        raise ConfigError(f"{frame}: with its header and bookkeeping it can never fit buffer_budget_bytes "
                          f"{settings.buffer_budget_bytes} (FRAME_BUFFER_BUFFER_BUDGET_BYTES)")


def check_sources(settings: Settings, specs: Sequence[SourceSpec]) -> None:
    """One camera per source, and synthetic frames that the codec and the memory budget can hold."""
    seen: set[str] = set()
    for spec in specs:
        if spec.camera in seen:
            raise ConfigError(f"FRAME_BUFFER_SOURCES: camera {spec.camera} is given twice")
        seen.add(spec.camera)
        if spec.kind == "synthetic":
            height, width = parse_size(spec.options.get("size", "640x480"))
            check_frame_size(settings, (height, width, 3), f"FRAME_BUFFER_SOURCES: source {spec.name}")


def stall_limit(settings: Settings) -> float:
    """The supervisor's stall limit: setting ``stall_timeout_s`` (``FRAME_BUFFER_STALL_TIMEOUT_S``, 60 s).

    It must be longer than ``publish_timeout_s``: a publish (and a source's submit) under backpressure waits
    that long without a heartbeat, and must not look like a stall.
    """
    limit = float(getattr(settings, "stall_timeout_s", STALL_LIMIT_S))
    if limit <= settings.publish_timeout_s:
        raise ConfigError(f"FRAME_BUFFER_STALL_TIMEOUT_S: must be longer than FRAME_BUFFER_PUBLISH_TIMEOUT_S "
                          f"({settings.publish_timeout_s:g} s, the longest wait under backpressure), got {limit:g}")
    return limit


def check_layout(settings: Settings) -> None:
    """Worker processes' consumer prefixes (``<prefix>-<process>``) must be names too; and the memory backend
    lives in one process: it cannot be split into roles or worker processes."""
    if settings.worker_processes:
        last = f"{settings.consumer_prefix}-{settings.worker_processes - 1}"
        problem = name_problem(last)
        if problem:
            raise ConfigError(f"FRAME_BUFFER_CONSUMER_PREFIX: the worker processes' prefix <prefix>-<process> "
                              f"{problem}")
    if settings.backend != "memory":
        return
    if settings.role != "all":
        raise ConfigError(f"FRAME_BUFFER_ROLE: role {settings.role} needs a shared backend (redis or rabbitmq); "
                          f"the memory backend lives in one process")
    if settings.worker_processes:
        raise ConfigError("FRAME_BUFFER_WORKER_PROCESSES: worker processes need a shared backend (redis or "
                          "rabbitmq); the memory backend lives in one process")

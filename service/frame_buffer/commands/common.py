"""What the subcommands share: argument types that refuse nonsense at the edge, the queue options, and
settings and queue from parsed arguments.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from frame_buffer.config import Bound, Settings, name_problem, show
from frame_buffer.errors import EXIT_UNREACHABLE, FrameBufferError
from frame_buffer.queue.settings import BACKENDS, DEFAULT_AMQP_URL, DEFAULT_REDIS_URL
from frame_buffer.sources import MAX_SIDE  # loadgen, demo and soak make frames no larger than synthetic sources

#: Labels of settings whose flag is not ``--<name>``.
_FLAGS = {"sources": "--source"}


# -- argument types: each refuses a value with one line naming what is wrong -------------------------
def integer(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` to ``high``."""
    bound = Bound(low, high)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {show(text)}") from None
        if problem := bound.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def number(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argument type: a finite number from ``low`` (exclusive with ``low_open``) to ``high``."""
    bound = Bound(low, high, low_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {show(text)}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {show(text)}")
        if problem := bound.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def frame_size(text: str) -> tuple[int, int]:
    """An argument type: ``WIDTHxHEIGHT`` -> (rows, columns), each side 1 to :data:`MAX_SIDE`."""
    width, sep, height = text.lower().partition("x")
    if not sep or not (width.isascii() and width.isdigit() and height.isascii() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT such as 640x480, got {show(text)}")
    columns, rows = int(width), int(height)
    if not (1 <= columns <= MAX_SIDE and 1 <= rows <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be 1 to {MAX_SIDE} pixels, got {show(text)}")
    return rows, columns


def name(text: str) -> str:
    """An argument type: a stream, group or consumer name (not empty, no spaces or control characters)."""
    if problem := name_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def url(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    """An argument type: a server URL that ``problem_of`` finds nothing wrong with."""

    def parse(text: str) -> str:
        if problem := problem_of(text):
            raise argparse.ArgumentTypeError(problem)
        return text

    return parse


def choices_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argument type: a comma-separated list of some of ``allowed``, without repeats."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",")]
        wrong = [item for item in items if item not in allowed]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), "
                                             f"got {show(wrong[0] if wrong else text)}")
        return list(dict.fromkeys(items))

    return parse


# -- queue options and settings --------------------------------------------------------------------------
def add_queue_options(parser: argparse.ArgumentParser) -> None:
    """Options every queue-using command shares; unset ones fall back to FRAME_BUFFER_* and --config."""
    parser.add_argument("--config", metavar="FILE",
                        help="YAML settings file, keys are setting names (default: FRAME_BUFFER_CONFIG)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="default: FRAME_BUFFER_BACKEND, else redis")
    parser.add_argument("--redis-url", metavar="URL",
                        help=f"default: FRAME_BUFFER_REDIS_URL, else {DEFAULT_REDIS_URL}")
    parser.add_argument("--amqp-url", metavar="URL",
                        help=f"default: FRAME_BUFFER_AMQP_URL, else {DEFAULT_AMQP_URL.replace('%', '%%')}")
    parser.add_argument("--stream", metavar="NAME",
                        help="stream / exchange name (default: FRAME_BUFFER_STREAM, else frame_queue)")


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from defaults, --config, the environment and finally the command line (flags named in errors)."""
    overrides = {"backend": args.backend, "redis_url": args.redis_url, "amqp_url": args.amqp_url,
                 "stream": args.stream, **extra}
    settings = Settings.load(args.config, overrides=overrides, labels=_FLAGS)
    return settings


def address(settings: Settings) -> str:
    """Where the configured backend is, for messages: ``redis at 127.0.0.1:6379``, without credentials."""
    if settings.backend == "memory":
        return "the in-process memory backend"
    return f"{settings.backend} at {settings.backend_address}"


def preflight(settings: Settings, groups: Sequence[str], *, outage_ok: bool) -> None:
    """Ask the backend once before starting, so that a start it refuses (credentials, a key of the wrong
    type) is one line and exit 2 at once rather than a run of retries; with ``outage_ok`` a server that does
    not answer is left to the run (which spools and rides through an outage)."""
    try:
        queue = settings.open_queue(groups)
        try:
            queue.stats(groups[0] if groups else settings.group)
        finally:
            queue.close()
    except FrameBufferError as exc:
        if not (outage_ok and exc.exit_code == EXIT_UNREACHABLE):
            raise

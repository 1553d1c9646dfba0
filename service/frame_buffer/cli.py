"""``frame-buffer``: one command with a subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``; this module assembles them, holds
what they share (queue options, argument types that refuse nonsense at the edge), and is the one place where
an expected error becomes one line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from frame_buffer import logs
from frame_buffer.config import (
    Bound,
    ConfigError,
    Settings,
    name_problem,
    show,
)
from frame_buffer.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_UNREACHABLE, FrameBufferError
from frame_buffer.flow.buffer import FRAME_OVERHEAD_BYTES
from frame_buffer.queue import FrameQueue, open_queue

#: Modules that add a subcommand; a module that is not there (yet) is skipped.
COMMANDS = (
    "frame_buffer.loadgen", "frame_buffer.consume", "frame_buffer.demo", "frame_buffer.bench",
    "frame_buffer.service", "frame_buffer.dlq", "frame_buffer.report", "frame_buffer.soak",
)

EXIT_CODES = """\
exit codes:
  0    done
  1    the command ran but could not do all of its job (frames not published, a dead letter not found,
       frames lost in the demo); the last line says which
  2    wrong configuration: a setting, argument, source or credential (one line names it)
  3    a server did not answer (one line names its address): retry when it is back
  130  interrupted (Ctrl-C)
  141  whoever read standard output stopped reading (| head)
"""

#: Largest frame side loadgen, demo and soak make (16K; the frame must also fit FRAME_BUFFER_MAX_FRAME_BYTES).
MAX_SIDE = 16384
#: Labels of settings whose flag is not ``--<name>``.
_FLAGS = {"sources": "--source"}


# -- parser ----------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, when it has one worth showing, and keeps the epilog's layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == argparse.SUPPRESS or not action.option_strings
                or "default" in text):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help, and a usage error as one line that names the argument."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every available subcommand."""
    parser = Parser(prog="frame-buffer", epilog=EXIT_CODES,
                    description="A lossless video-frame buffer on Redis Streams or RabbitMQ.\n"
                    "'frame-buffer COMMAND --help' shows each command's options and their defaults.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    for command in subparsers.choices.values():
        command.epilog = command.epilog or EXIT_CODES
    return parser


def version() -> str:
    """The installed distribution's version."""
    try:
        return importlib.metadata.version("frame-buffer")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


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
    parser.add_argument("--backend", choices=("redis", "rabbitmq", "memory"),
                        help="default: FRAME_BUFFER_BACKEND, else redis")
    parser.add_argument("--redis-url", metavar="URL",
                        help="default: FRAME_BUFFER_REDIS_URL, else redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp-url", metavar="URL",
                        help="default: FRAME_BUFFER_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%%2F")
    parser.add_argument("--stream", metavar="NAME",
                        help="stream / exchange name (default: FRAME_BUFFER_STREAM, else frame_queue)")


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from defaults, --config, the environment and finally the command line (flags named in errors)."""
    overrides = {"backend": args.backend, "redis_url": args.redis_url, "amqp_url": args.amqp_url,
                 "stream": args.stream, **extra}
    return Settings.load(args.config, overrides=overrides, labels=_FLAGS)


def queue_from(settings: Settings, groups: Sequence[str] | None = None) -> FrameQueue:
    """Open the queue the settings describe, declaring ``groups`` (default: the configured group)."""
    return open_queue(settings.backend, redis_url=settings.redis_url, amqp_url=settings.amqp_url,
                      settings=settings.queue_settings(groups), codec=settings.codec())


def address(settings: Settings) -> str:
    """Where the configured backend is, for messages: ``redis at 127.0.0.1:6379``, without credentials."""
    if settings.backend == "memory":
        return "the in-process memory backend"
    parts = urllib.parse.urlsplit(settings.redis_url if settings.backend == "redis" else settings.amqp_url)
    if parts.scheme == "unix":
        return f"redis at {parts.path}"
    default = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{settings.backend} at {host}:{parts.port or default}"


def check_frame_size(settings: Settings, shape: tuple[int, ...], flag: str = "--size") -> None:
    """Refuse, before any frame is made, a frame size the settings would refuse frame by frame: over
    ``max_frame_bytes`` (the codec's FrameTooLarge) or over the producer's whole memory budget
    (FrameOverBudget). The messages name the settings, which the frame-by-frame errors cannot."""
    nbytes = math.prod(shape)
    frame = f"{flag}: a {shape[1]}x{shape[0]} RGB frame is {nbytes} bytes"
    if nbytes > settings.max_frame_bytes:
        raise ConfigError(f"{frame}, over max_frame_bytes {settings.max_frame_bytes} (FRAME_BUFFER_MAX_FRAME_BYTES)")
    if nbytes + FRAME_OVERHEAD_BYTES > settings.buffer_budget_bytes:
        raise ConfigError(f"{frame}: it can never fit buffer_budget_bytes {settings.buffer_budget_bytes} "
                          "(FRAME_BUFFER_BUFFER_BUDGET_BYTES)")


def preflight(settings: Settings, groups: Sequence[str], *, outage_ok: bool) -> None:
    """Ask the backend once before starting, so that a start it refuses (credentials, a key of the wrong
    type) is one line and exit 2 at once rather than a run of retries; with ``outage_ok`` a server that does
    not answer is left to the run (which spools and rides through an outage)."""
    try:
        queue = queue_from(settings, groups)
        try:
            queue.stats(groups[0] if groups else settings.group)
        finally:
            queue.close()
    except FrameBufferError as exc:
        if not (outage_ok and exc.exit_code == EXIT_UNREACHABLE):
            raise


# -- the one top-level handler ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``frame-buffer``; returns the exit code.

    Every expected error (:class:`FrameBufferError`) is one line on stderr and its ``exit_code``; anything
    else is a bug and keeps its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        logs.configure()
        # A command reports a broker that fails as its one line, with the address; pika's own ERROR lines
        # about the same failure would bury it (``run`` configures logging again with its settings).
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a reader that went away is noticed here and not at exit
        return code
    except FrameBufferError as exc:
        kind = "configuration error: " if isinstance(exc, ConfigError) else ""
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"frame-buffer: {kind}{message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at devnull, so that the
        # interpreter's flush at exit does not fail again with "Exception ignored ... BrokenPipeError".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

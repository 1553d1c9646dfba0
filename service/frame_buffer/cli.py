"""``frame-buffer``: one command with a subcommand per job.

Each subcommand is a module of :mod:`frame_buffer.commands` exposing ``register(subparsers)``; this module
builds the root parser, registers every one of them, and is the one place where an expected error becomes
one line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from frame_buffer import logs
from frame_buffer.commands import bench, consume, demo, dlq, loadgen, report, run, soak
from frame_buffer.config import ConfigError
from frame_buffer.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, FrameBufferError

#: Every subcommand, in the order of ``--help``.
COMMANDS = (loadgen, consume, demo, bench, run, dlq, report, soak)

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
    """The root parser with every subcommand."""
    parser = Parser(prog="frame-buffer", epilog=EXIT_CODES,
                    description="A lossless video-frame buffer on Redis Streams or RabbitMQ.\n"
                    "'frame-buffer COMMAND --help' shows each command's options and their defaults.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.epilog = subparser.epilog or EXIT_CODES
    return parser


def version() -> str:
    """The installed distribution's version."""
    try:
        return importlib.metadata.version("frame-buffer")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


# -- the one top-level handler ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``frame-buffer``; returns the exit code.

    Every expected error (:class:`FrameBufferError`) is one line on stderr and its ``exit_code``; anything
    else is a bug and keeps its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        logs.configure(one_shot=True)  # ``run`` configures logging again with its settings
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

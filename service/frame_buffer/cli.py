"""``frame-buffer``: one command with a subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from frame_buffer import logs
from frame_buffer.config import ConfigError, Settings
from frame_buffer.queue import BackendUnavailable, FrameQueue, open_queue

#: Modules that add a subcommand; a module that is not there (yet) is skipped.
COMMANDS = (
    "frame_buffer.loadgen", "frame_buffer.consume", "frame_buffer.demo", "frame_buffer.bench",
    "frame_buffer.service", "frame_buffer.dlq", "frame_buffer.report", "frame_buffer.soak",
)


def add_queue_options(parser: argparse.ArgumentParser) -> None:
    """Options every queue-using command shares; unset ones fall back to FRAME_BUFFER_* and --config."""
    parser.add_argument("--config", help="YAML settings file (keys are setting names)")
    parser.add_argument("--backend", choices=("redis", "rabbitmq", "memory"))
    parser.add_argument("--redis-url", help="default redis://127.0.0.1:6379/0 (FRAME_BUFFER_REDIS_URL)")
    parser.add_argument("--amqp-url", help="default amqp://guest:guest@127.0.0.1:5672/%%2F (FRAME_BUFFER_AMQP_URL)")
    parser.add_argument("--stream", help="stream / exchange name, default frame_queue")


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from defaults, --config, the environment and finally the command line."""
    return Settings.load(args.config).replace(
        backend=args.backend, redis_url=args.redis_url, amqp_url=args.amqp_url, stream=args.stream, **extra
    )


def queue_from(settings: Settings) -> FrameQueue:
    """Open the queue the settings describe."""
    return open_queue(settings.backend, redis_url=settings.redis_url, amqp_url=settings.amqp_url,
                      settings=settings.queue_settings(), codec=settings.codec())


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="frame-buffer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``frame-buffer``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"frame-buffer: configuration error: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"frame-buffer: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

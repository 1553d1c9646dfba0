"""The one root of every error the package raises on purpose, and the exit code each one stands for.

Why one root: a caller (the CLI's top-level handler, a service embedding the library) catches
:class:`FrameBufferError` for everything expected and prints one line; anything else is a bug and keeps its
traceback. Each class carries the exit code the ``frame-buffer`` command ends with (README, "Exit codes").
"""

from __future__ import annotations

#: Exit codes of ``frame-buffer``; the README's table lists the same.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but could not do all of its job (frames left behind, an id not found)
EXIT_CONFIG = 2  # a setting, argument, source or credential is wrong: fix the configuration
EXIT_UNREACHABLE = 3  # a server did not answer: retry when it is back
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C) stopped a one-shot command
EXIT_BROKEN_PIPE = 141  # the reader of standard output went away (``| head``), as 128 + SIGPIPE


class FrameBufferError(Exception):
    """Root of every error the package raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(FrameBufferError, ValueError):
    """A configuration value, argument or source is wrong; the message starts with its name."""

    exit_code = EXIT_CONFIG

"""Structured logs: one line per event, as text or as JSON (``FRAME_BUFFER_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(log_format: str = "text", level: str = "INFO", *, one_shot: bool = False) -> None:
    """Route every logger to stderr in the chosen format (replaces earlier handlers).

    pika logs every connection step, and a delete of a missing queue as a warning; its failures reach us as
    exceptions, which we log with the broker's address, so only its errors are kept. A ``one_shot`` command
    reports a broker that fails as its one last line, with the address: there even pika's ERROR lines about
    the same failure would bury it, so pika is silenced.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.CRITICAL if one_shot else logging.ERROR)

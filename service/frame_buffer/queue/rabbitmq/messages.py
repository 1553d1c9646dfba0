"""What the backend's AMQP messages carry, and reading it back from messages anyone may have published.

The codec header travels in the AMQP header ``h`` and the payload is the body; ``x-fb-attempts`` carries the
deliveries a message had before a delayed nack or a dead letter republished it.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, TypeGuard

import pika

HEADER = "h"
ATTEMPTS = "x-fb-attempts"
_MAX_COUNT = 2**31
_instance_ids = itertools.count(1)


def persistent(message_id: str, headers: dict[str, Any]) -> Any:
    """Properties of a message the broker keeps on disk (``delivery_mode`` 2)."""
    return pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers)


def count(value: object) -> int:
    """A count from a message's headers, which whoever published it set: an int in [0, 2**31), else 0."""
    return value if is_int(value) and 0 <= value < _MAX_COUNT else 0


def is_int(value: object) -> TypeGuard[int]:
    """An int and not a bool. isinstance, not type(): pika decodes a 64-bit field (the broker's
    x-delivery-count, a timestamp) to an int subclass of its own."""
    return isinstance(value, int) and not isinstance(value, bool)


def show(value: object) -> str:
    """A header value for a message: its type and its repr, bounded."""
    text = repr(value)
    return f"a {type(value).__name__} ({text[:57] + '...' if len(text) > 60 else text})"


class MessageIds:
    """Message ids unique across processes and instances, in publish order within one instance."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}.{next(_instance_ids):x}"
        self._numbers = itertools.count(1)

    def new(self) -> str:
        return f"{time.time_ns()}-{self._prefix}.{next(self._numbers):x}"

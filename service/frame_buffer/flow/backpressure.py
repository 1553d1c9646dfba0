"""Backpressure policies: what ``Producer.submit`` does when the buffer (or the budget) is full.

* ``block`` (default, lossless): wait for room; after the timeout raise
  :class:`~frame_buffer.queue.BackpressureTimeout`. The frame was not accepted, so nothing is lost:
  the caller still holds it.
* ``drop_oldest``: make room by discarding the oldest frame held (live views that want fresh frames).
* ``drop_newest``: discard the frame being submitted and keep the older ones.

Drops are counted in ``frame_queue_dropped{reason}``. The reason is the policy's name when the buffer
was full, and ``spool_full`` when the memory budget was held by the spool (the backend is down): then
``drop_oldest`` discards the oldest spooled frame and ``drop_newest`` the submitted one. Under
``drop_oldest``, when every held frame is in the middle of being published (so none can be taken back),
the submitted frame is discarded instead and counted as ``drop_newest``: the counter names what was
actually thrown away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from frame_buffer import metrics
from frame_buffer.errors import FrameBufferError
from frame_buffer.flow.buffer import AdaptiveBuffer, FrameOverBudget, Item, item_cost
from frame_buffer.flow.spool import Spool
from frame_buffer.queue import BackpressureTimeout

Policy = Literal["block", "drop_oldest", "drop_newest"]
POLICIES: tuple[Policy, ...] = ("block", "drop_oldest", "drop_newest")


def parse_policy(name: str) -> Policy:
    """Validate a policy name from configuration."""
    for policy in POLICIES:
        if name == policy:
            return policy
    raise ValueError(f"policy: must be one of {', '.join(POLICIES)}; got {name!r}")


class ProducerClosed(FrameBufferError, RuntimeError):
    """``submit`` was called on a producer that is closing."""


class Admission:
    """Admits frames into the buffer under a policy; the caller holds ``cond`` (shared with the publisher).

    Args:
        policy: one of :data:`POLICIES`.
        buffer / spool: what the frames go into and what a full budget may be spent on.
        cond: the producer's condition variable; waiting on it releases the lock for the publisher.
        closed: tells a waiting ``block`` admission to give up because the producer is closing.
        spill: called when the buffer is full, before the policy acts; returns True when it made room (the
            producer moves the buffer to the spool while the breaker is open, so that an outage is limited
            by the byte budget and not by the buffer's frame capacity).
    """

    def __init__(
        self, policy: str, buffer: AdaptiveBuffer, spool: Spool, cond: threading.Condition,
        closed: Callable[[], bool], *, spill: Callable[[], bool] = lambda: False,
    ) -> None:
        self.policy = parse_policy(policy)
        self.buffer = buffer
        self.spool = spool
        self.cond = cond
        self.closed = closed
        self.spill = spill
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` frames dropped for ``reason`` (one of ``metrics.DROP_REASONS``)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        metrics.dropped.labels(reason=reason).inc(count)

    def admit(self, item: Item, timeout_s: float) -> bool:
        """Put ``item`` in the buffer; False when the policy discarded it (the caller's frame)."""
        cost = item_cost(item)
        if cost > self.buffer.budget.total:
            raise FrameOverBudget(
                f"a frame of {cost} bytes can never fit the memory budget of {self.buffer.budget.total} bytes"
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.closed():
                raise ProducerClosed("the producer is closing")
            if self.buffer.has_room(cost):
                self.buffer.append(item, cost)
                self.cond.notify_all()
                return True
            if self.buffer.budget.fits(cost) and self.spill():
                continue
            budget_bound = not self.buffer.budget.fits(cost)
            spool_holds_budget = budget_bound and len(self.spool) > 0
            if self.policy == "block":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackpressureTimeout(
                        f"submit waited {timeout_s}s for room: buffer {len(self.buffer)}/{self.buffer.capacity} "
                        f"frames, spool {len(self.spool)} frames, {self.buffer.budget.used} of "
                        f"{self.buffer.budget.total} budget bytes in use"
                    )
                self.cond.wait(remaining)
            elif self.policy == "drop_newest":
                self.drop("spool_full" if spool_holds_budget else "drop_newest")
                return False
            elif spool_holds_budget:
                self.spool.drop_oldest()
                self.drop("spool_full")
            elif len(self.buffer):
                self.buffer.drop_oldest()
                self.drop("drop_oldest")
            else:
                self.drop("drop_newest")
                return False

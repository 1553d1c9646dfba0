"""One reader per shard, each blocked in ``XREADGROUP ... BLOCK`` on its shard, handing batches to the consumer.

A blocking ``XREADGROUP`` over several streams needs them in one hash slot, and shards are in different slots
by design. Polling every shard in turn would keep an idle worker busy, and blocking on one shard at a time
would let a frame on another shard wait out the block. So each shard has a thread of its own, blocked on its
socket (idle CPU), and the consumer's thread waits on a :class:`Handoff` for whichever shard answers first.

A reader reads only while the consumer waits for frames, and only once the consumer took its last batch: at most
one batch per shard waits in the hand-off (from readers already blocked when another shard answered), pending
under the consumer's name. :meth:`Handoff.close` returns what was never taken, for the queue to give back;
after a crash those entries are reclaimed like any pending entry (``claim_min_idle_ms``).
A reader that fails hands its error to the consumer (which raises it, so the breaker sees it) and ends; the
queue starts a new one at the next consume. No reader dies silently.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from frame_buffer.queue.base import RawEntry

Batch = list[RawEntry] | BaseException


class Handoff:
    """Batches read from the shards, in the order they arrived, until the consumer takes them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._batches: deque[tuple[int, Batch]] = deque()
        self._untaken: set[int] = set()  # shards whose last batch waits here
        self._demand = 0  # consumers waiting in take()
        self.closed = False

    def put(self, shard: int, batch: Batch) -> None:
        with self._cond:
            if self.closed:
                return
            self._batches.append((shard, batch))
            self._untaken.add(shard)
            self._cond.notify_all()

    def wait_turn(self, shard: int) -> bool:
        """Wait until the consumer waits for frames and ``shard``'s last batch was taken; False once closed."""
        with self._cond:
            self._cond.wait_for(lambda: (self._demand > 0 and shard not in self._untaken) or self.closed)
            return not self.closed

    def take(self, timeout_s: float) -> tuple[int, Batch] | None:
        """The oldest batch, waiting up to ``timeout_s``; None when none came."""
        with self._cond:
            self._demand += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._batches or self.closed, timeout_s)
            finally:
                self._demand -= 1
            if not self._batches:
                return None
            shard, batch = self._batches.popleft()
            self._untaken.discard(shard)
            self._cond.notify_all()
            return shard, batch

    def close(self) -> list[tuple[int, list[RawEntry]]]:
        """Stop every reader at its next step; the batches never taken, to give back."""
        with self._cond:
            self.closed = True
            left = [(shard, batch) for shard, batch in self._batches if not isinstance(batch, BaseException)]
            self._batches.clear()
            self._cond.notify_all()
            return left


class ShardReader(threading.Thread):
    """Reads one shard for one consumer (``read`` blocks up to the backend's longest BLOCK) into ``handoff``."""

    def __init__(self, shard: int, read: Callable[[], list[RawEntry]], handoff: Handoff, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.shard = shard
        self._read = read
        self._handoff = handoff

    def run(self) -> None:
        try:
            while self._handoff.wait_turn(self.shard):
                batch = self._read()
                if batch:
                    self._handoff.put(self.shard, batch)
        except BaseException as exc:  # the consumer raises it; a closed hand-off drops it (the client was closed)
            self._handoff.put(self.shard, exc)

"""The in-memory spool: where frames wait while the circuit breaker is open.

Why in memory and not on disk: the service's promise is about a backend outage of seconds to minutes on
a live source, and the budget makes the cost explicit; a disk spool would need its own fsync and
recovery story. The spool is charged to the same :class:`~frame_buffer.flow.buffer.MemoryBudget` as the
buffer, so the two together never pass it; moving a frame from the buffer to the spool costs nothing.
Frames leave in the order they entered, and the producer drains the spool before the buffer, so a
replay keeps every camera's frames in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from frame_buffer import metrics
from frame_buffer.flow.buffer import Item, MemoryBudget


class Spool:
    """A FIFO of encoded frames whose bytes are already charged to ``budget``. Not locked (see buffer)."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self._items: deque[tuple[Item, int]] = deque()
        self.bytes = 0
        self.total_spooled = 0  # frames that entered the spool (a failed replay does not count again)
        self._publish_metrics()

    def __len__(self) -> int:
        return len(self._items)

    def push_back(self, items: Sequence[tuple[Item, int]]) -> None:
        """Append frames that are newer than everything spooled (from the buffer)."""
        self._items.extend(items)
        self._added(items)

    def push_front(self, items: Sequence[tuple[Item, int]], *, returning: bool = False) -> None:
        """Put back frames older than everything spooled (a batch whose publish failed), keeping order.

        ``returning``: the frames were taken from the spool itself, so they are not counted again.
        """
        self._items.extendleft(reversed(items))
        self._added(items, count=not returning)

    def _added(self, items: Sequence[tuple[Item, int]], count: bool = True) -> None:
        self.bytes += sum(cost for _, cost in items)
        if count:
            self.total_spooled += len(items)
        self._publish_metrics()

    def take(self, count: int) -> list[tuple[Item, int]]:
        """Remove up to ``count`` frames from the head; their bytes stay charged until published."""
        taken = [self._items.popleft() for _ in range(min(count, len(self._items)))]
        self.bytes -= sum(cost for _, cost in taken)
        self._publish_metrics()
        return taken

    def drop_oldest(self) -> int:
        """Discard the head frame and release its bytes (the budget is full); returns them."""
        _, cost = self._items.popleft()
        self.bytes -= cost
        self.budget.release(cost)
        self._publish_metrics()
        return cost

    def items(self) -> Iterable[tuple[Item, int]]:
        """The frames held, oldest first."""
        return self._items

    def _publish_metrics(self) -> None:
        metrics.spool_frames.set(len(self._items))
        metrics.spool_bytes.set(self.bytes)

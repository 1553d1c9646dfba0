"""The memory budget and the adaptive buffer between the frame source and the publisher.

Why adaptive: a fixed buffer is either too small to ride out a burst on a fast backend or, on a slow
one, large enough to hold many seconds of stale frames. Capacity follows the observed drain rate (about
``horizon_s`` seconds of what the backend can take), between ``min_capacity`` and ``max_capacity``
frames, and never more frames than the byte budget holds at the average frame size. Independently of
the capacity, bytes are checked frame by frame against the budget, so the budget holds whatever the
frame sizes.

Neither class locks: the producer guards them (and the spool) with one condition variable, because
admission decisions look at both at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable

from frame_buffer import metrics
from frame_buffer.codec import EncodedFrame
from frame_buffer.errors import EXIT_CONFIG, FrameBufferError

#: Bookkeeping held per frame besides header and payload (deque slot, tuple, Python objects).
FRAME_OVERHEAD_BYTES = 256

#: What the buffer and the spool hold: the camera (ordering key) and the encoded frame.
Item = tuple[str, EncodedFrame]


def item_cost(item: Item) -> int:
    """Bytes an item is charged against the budget."""
    return item[1].nbytes + FRAME_OVERHEAD_BYTES


class FrameOverBudget(FrameBufferError, ValueError):
    """A single frame is larger than the whole memory budget: it can never be admitted."""

    exit_code = EXIT_CONFIG


class MemoryBudget:
    """Bytes the buffer, the frames being published and the spool may hold together.

    Args:
        total_bytes: the budget; ``used`` never exceeds it.
    """

    def __init__(self, total_bytes: int) -> None:
        if total_bytes < 1:
            raise ValueError(f"budget_bytes: must be positive, got {total_bytes}")
        self.total = total_bytes
        self.used = 0
        self.peak = 0
        metrics.buffer_budget.set(total_bytes)

    def fits(self, nbytes: int) -> bool:
        """True when ``nbytes`` more can be held without passing the budget."""
        return self.used + nbytes <= self.total

    def reserve(self, nbytes: int) -> None:
        """Charge ``nbytes``; the caller checked :meth:`fits` first."""
        if not self.fits(nbytes):
            raise FrameOverBudget(f"{nbytes} bytes do not fit: {self.used} of {self.total} in use")
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` (published or dropped frames)."""
        self.used = max(0, self.used - nbytes)


class AdaptiveBuffer:
    """A FIFO of encoded frames whose capacity follows the drain rate and the byte budget.

    Args:
        budget: shared with the spool.
        min_capacity / max_capacity: bounds of the capacity in frames.
        horizon_s: the buffer holds about this many seconds of what the backend drains.
        smoothing: weight of the newest drain-rate sample in the moving average.
    """

    def __init__(
        self,
        budget: MemoryBudget,
        min_capacity: int = 100,
        max_capacity: int = 10_000,
        *,
        horizon_s: float = 1.0,
        smoothing: float = 0.2,
    ) -> None:
        if not 1 <= min_capacity <= max_capacity:
            raise ValueError(f"need 1 <= min_capacity <= max_capacity, got {min_capacity}, {max_capacity}")
        self.budget = budget
        self.min_capacity = min_capacity
        self.max_capacity = max_capacity
        self.horizon_s = horizon_s
        self.smoothing = smoothing
        self.capacity = min_capacity
        self.drain_rate = 0.0  # frames per second the backend takes while it is taking frames
        self._items: deque[tuple[Item, int]] = deque()
        self._admitted_ns: deque[int] = deque()  # perf_counter_ns of each append, for the ``buffer`` stage
        self.bytes = 0
        self._cost_total = 0  # of every frame ever admitted, for the average frame size
        self._cost_count = 0
        metrics.buffer_capacity.set(self.capacity)

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self, cost: int) -> bool:
        """True when a frame of ``cost`` bytes fits in both the capacity and the budget."""
        return len(self._items) < self.capacity and self.budget.fits(cost)

    def append(self, item: Item, cost: int) -> None:
        """Add a frame at the tail, charging the budget."""
        self.budget.reserve(cost)
        self._items.append((item, cost))
        self._admitted_ns.append(time.perf_counter_ns())
        self.bytes += cost
        self._cost_total += cost
        self._cost_count += 1

    def take(self, count: int, *, publishing: bool = False) -> list[tuple[Item, int]]:
        """Remove up to ``count`` frames from the head; their bytes stay charged to the budget.

        ``publishing``: the publisher takes them to publish, which ends their ``buffer`` stage (counted in
        ``frame_queue_stage_seconds``); frames moved to the spool are not counted.
        """
        taken = [self._items.popleft() for _ in range(min(count, len(self._items)))]
        admitted = [self._admitted_ns.popleft() for _ in taken]
        if publishing and admitted:
            child, now = metrics.STAGE["buffer"], time.perf_counter_ns()
            for since in admitted:
                child.observe((now - since) / 1e9)
        self.bytes -= sum(cost for _, cost in taken)
        return taken

    def drop_oldest(self) -> int:
        """Discard the head frame and release its bytes; returns them."""
        _, cost = self._items.popleft()
        self._admitted_ns.popleft()
        self.bytes -= cost
        self.budget.release(cost)
        return cost

    def record_drain(self, frames: int, seconds: float) -> None:
        """Feed one successful publish of ``frames`` that took ``seconds``; adapts the capacity.

        Only time spent publishing counts, not idle time without frames, so the rate measures what the
        backend can take; under backend backpressure the calls get slow and the capacity shrinks, which
        pushes the backpressure to the source instead of holding stale frames.
        """
        if frames <= 0:
            return
        sample = frames / max(seconds, 1e-6)
        self.drain_rate = sample if self.drain_rate == 0 else (
            self.smoothing * sample + (1 - self.smoothing) * self.drain_rate
        )
        wanted = self.drain_rate * self.horizon_s
        if self._cost_count:
            average = self._cost_total / self._cost_count
            wanted = min(wanted, self.budget.total / average)
        self.capacity = max(self.min_capacity, min(self.max_capacity, math.floor(wanted)))
        metrics.buffer_capacity.set(self.capacity)

    def items(self) -> Iterable[tuple[Item, int]]:
        """The frames held, oldest first (for moving them to the spool)."""
        return self._items

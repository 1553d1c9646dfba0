"""Which bytes of a segment are free: a ring of variable-size slots, allocated at the head, released at the tail.

Slots are allocated in publish order and released in the same order (the release rule follows stream ids, which
grow with publish order), so a ring is exact and needs no free list. A slot that never got an entry (its
publish failed) is marked dead and leaves when it reaches the tail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Slot:
    """One allocation: ``offset`` and ``size`` in the segment (header included), its generation, and the stream
    entry id that refers to it once published (``None`` before; ``dead`` when it will never have one)."""

    offset: int
    size: int
    generation: int
    entry_id: tuple[int, int] | None = None
    dead: bool = False
    #: Written by the caller in place (a reservation it committed through :meth:`StoreWriter.adopt`): the
    #: caller's frame still points at it after a failed publish, so it is reopened, never reused.
    external: bool = False
    #: The segment the slot is in (a writer that moved to a new segment leaves the old one's slots alone).
    segment: str = ""


class Ring:
    """Allocation state of one segment of ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.live: deque[Slot] = deque()
        self.used = 0

    def fit(self, size: int) -> int | None:
        """The offset where a slot of ``size`` bytes goes now, or ``None`` when there is no room for it."""
        if not self.live:
            return 0 if size <= self.capacity else None
        first, last = self.live[0], self.live[-1]
        head = last.offset + last.size
        if last.offset >= first.offset:  # not wrapped: room after the head, or else before the tail
            if head + size <= self.capacity:
                return head
            return 0 if size <= first.offset else None
        return head if head + size <= first.offset else None  # wrapped: only the gap up to the tail

    def add(self, slot: Slot) -> None:
        """Record an allocation :meth:`fit` placed."""
        self.live.append(slot)
        self.used += slot.size

    def abort(self, slot: Slot) -> None:
        """``slot`` will never be published: dead, and given back at once when it is the newest."""
        slot.dead = True
        while self.live and self.live[-1].dead:
            self.used -= self.live.pop().size

    def release_before(self, needed: tuple[int, int]) -> list[Slot]:
        """Release, from the tail, the slots whose entry is older than ``needed`` and the dead ones; stops at the
        first slot that is still needed or not yet published. Returns the released slots."""
        released = []
        while self.live:
            slot = self.live[0]
            if not slot.dead and (slot.entry_id is None or slot.entry_id >= needed):
                break
            released.append(self.live.popleft())
            self.used -= slot.size
        return released

    def release_all(self) -> list[Slot]:
        """Release every slot (the segment itself is being abandoned)."""
        released = list(self.live)
        self.live.clear()
        self.used = 0
        return released

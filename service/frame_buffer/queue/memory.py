"""In-process backend with the same semantics as Redis Streams: for tests, the demo and local runs.

Unlike the network backends, one instance is meant to be shared by the threads of a process (it is the
only way they can share it), so every method takes the instance lock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import (
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueSettings,
    QueueStats,
    RawEntry,
)


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_at: float
    count: int


@dataclass(slots=True)
class _Group:
    last_delivered: int = 0
    pel: dict[int, _Pending] = field(default_factory=dict)


_DEAD_ID = re.compile(r"([0-9]{1,30})-0")


def _entry_id(number: int) -> str:
    return f"{number}-0"


def _number(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _dead_number(entry_id: object) -> int | None:
    """The number in a dead letter's id given from outside (the CLI, an operator); None when it is not an id."""
    match = _DEAD_ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    return int(match[1]) if match else None


class MemoryQueue(FrameQueue):
    """:class:`FrameQueue` held in this process's memory; lost when the process exits."""

    backend = "memory"

    def __init__(self, settings: QueueSettings | None = None, codec: FrameCodec | None = None) -> None:
        super().__init__(settings, codec)
        self._cond = threading.Condition()
        self._entries: dict[int, tuple[bytes, bytes]] = {}
        self._next = 1
        self._groups: dict[str, _Group] = {}
        self._recovered: set[tuple[str, str]] = set()
        self._dlq: dict[int, DeadLetter] = {}
        self._next_dead = 1
        for group in self.settings.groups:
            self.ensure_group(group)

    # -- publishing -------------------------------------------------------------------------------------
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Append copies of the entries once every group has room for them."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        with self._cond:  # held from the check to the append (a wait releases it): room seen is room used
            self._await_capacity(len(entries), deadline)
            ids = []
            for _camera, encoded in entries:
                self._entries[self._next] = (encoded.header, bytes(encoded.payload))
                ids.append(_entry_id(self._next))
                self._next += 1
            self._cond.notify_all()
            return ids

    def _backlog(self, group: _Group) -> int:
        return (self._next - 1 - group.last_delivered) + len(group.pel)

    def _backlog_bound(self) -> int:
        return self._slowest_backlog()  # exact, and cheap: no estimate needed

    def _measure_backlog(self) -> tuple[int, bool]:
        backlog = self._slowest_backlog()
        return backlog, backlog > 0

    def _pause(self, remaining: float) -> None:
        self._cond.wait(remaining)  # woken by an ack or a dead letter

    def _slowest_backlog(self) -> int:
        if not self._groups:
            return len(self._entries)
        return max(self._backlog(group) for group in self._groups.values())

    def _trim(self) -> None:
        """Drop entries every group has acknowledged (the MINID rule of the Redis backend).

        Only called after an ack or a dead letter, so at least one group exists.
        """
        oldest = min(min(g.pel, default=g.last_delivered + 1) for g in self._groups.values())
        for number in [n for n in self._entries if n < oldest]:
            del self._entries[number]

    # -- consuming --------------------------------------------------------------------------------------
    def ensure_group(self, group: str) -> None:
        """Create the group at the oldest entry held."""
        with self._cond:
            if group not in self._groups:
                self._groups[group] = _Group(last_delivered=min(self._entries, default=self._next) - 1)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            state = self._groups[group]
            while True:
                now = time.monotonic()
                min_idle = self.settings.claim_min_idle_ms / 1000
                if (group, consumer) not in self._recovered:
                    self._recovered.add((group, consumer))
                    claimable = [n for n, p in state.pel.items() if p.consumer == consumer]
                else:
                    claimable = [n for n, p in state.pel.items() if now - p.delivered_at >= min_idle]
                if claimable:
                    return [self._deliver(state, n, consumer, now) for n in sorted(claimable)[:count]]
                fresh = [n for n in range(state.last_delivered + 1, self._next) if n in self._entries][:count]
                if fresh:
                    state.last_delivered = fresh[-1]
                    return [self._deliver(state, n, consumer, now) for n in fresh]
                remaining = deadline - now
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _deliver(self, state: _Group, number: int, consumer: str, now: float) -> RawEntry:
        previous = state.pel.get(number)
        attempts = previous.count + 1 if previous else 1
        state.pel[number] = _Pending(consumer, now, attempts)
        header, payload = self._entries[number]
        return RawEntry(_entry_id(number), header, payload, attempts, number)

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Remove the deliveries from their groups' pending lists."""
        with self._cond:
            for delivery in deliveries:
                self._groups[delivery.group].pel.pop(_number(delivery.id), None)
            self._trim()
            self._cond.notify_all()

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Backdate the pending entry so the idle-time reclaim picks it up after ``delay_s``."""
        with self._cond:
            pending = self._groups[delivery.group].pel.get(_number(delivery.id))
            if pending is not None:
                pending.delivered_at = time.monotonic() - self.settings.claim_min_idle_ms / 1000 + delay_s
            self._cond.notify_all()

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        with self._cond:
            number = self._next_dead
            self._next_dead += 1
            payload = None if entry.payload is None else bytes(entry.payload)
            self._dlq[number] = DeadLetter(
                _entry_id(number), entry.id, group, reason, error[:1000], entry.attempts,
                int(time.time() * 1000), entry.header, payload,
            )
            self._groups[group].pel.pop(_number(entry.id), None)
            self._trim()
            self._cond.notify_all()

    # -- inspection -------------------------------------------------------------------------------------
    def stats(self, group: str) -> QueueStats:
        """Depth, lag and pending computed from the in-memory state."""
        with self._cond:
            state = self._groups.get(group)
            if state is None:
                return QueueStats(len(self._entries), len(self._entries), 0, 0, len(self._dlq))
            now = time.monotonic()
            oldest = max((now - p.delivered_at for p in state.pel.values()), default=0.0)
            return QueueStats(
                len(self._entries), self._next - 1 - state.last_delivered, len(state.pel),
                int(oldest * 1000), len(self._dlq),
            )

    # -- dead letters -----------------------------------------------------------------------------------
    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Dead letters in id order."""
        start = _dead_number(after) if after else 0
        if start is None:
            raise ValueError(f"after: {after!r} is not a dead-letter id of the memory backend")
        with self._cond:
            return [letter for n, letter in sorted(self._dlq.items()) if n > start][:count]

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """Append each dead letter's original header and payload to the queue and delete it."""
        replayed = 0
        with self._cond:
            for entry_id in ids:
                letter = self._dlq.pop(_dead_number(entry_id) or 0, None)  # numbers start at 1: 0 is none
                if letter is None:
                    continue
                self._entries[self._next] = (letter.header or b"", letter.payload or b"")
                self._next += 1
                replayed += 1
            self._cond.notify_all()
        return replayed

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """Delete the given dead letters, or all."""
        with self._cond:
            if ids is None:
                purged = len(self._dlq)
                self._dlq.clear()
                return purged
            return sum(self._dlq.pop(_dead_number(i) or 0, None) is not None for i in ids)

    def close(self) -> None:
        """Nothing to release."""

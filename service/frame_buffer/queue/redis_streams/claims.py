"""Recovery of pending entries: a consumer's own after a restart, then dead consumers' with XAUTOCLAIM.

XAUTOCLAIM pages with the returned cursor and runs at most every quarter of ``claim_min_idle_ms`` between
sweeps; ids deleted meanwhile (the third element of the reply, Redis 7) are acked so they leave the pending list.
"""

from __future__ import annotations

import time
from typing import Any

from frame_buffer.queue.base import QueueSettings, RawEntry
from frame_buffer.queue.redis_streams.entries import id_to_str, parse_id, raw_entry
from frame_buffer.queue.redis_streams.keys import StreamKeys

#: How often consume() runs XAUTOCLAIM at most, relative to the claim idle time.
_CLAIM_INTERVAL_FRACTION = 0.25


class Claims:
    """The claiming state of one backend instance: which consumer names recovered, and each group's sweep."""

    def __init__(self, keys: StreamKeys, settings: QueueSettings) -> None:
        self._keys = keys
        self._settings = settings
        self._recovered: set[tuple[str, str]] = set()
        self._cursor: dict[str, str] = {}
        self._last_sweep: dict[str, float] = {}

    def claim(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """What ``consumer`` should get before new entries: on its first call the entries its name left
        pending (a restart after a crash), else entries idle past ``claim_min_idle_ms``; often none."""
        if (group, consumer) not in self._recovered:
            self._recovered.add((group, consumer))
            own = self._keys.call(lambda: self._claim_own_pending(group, consumer, count))
            if own:
                return own
        return self._keys.call(lambda: self._autoclaim(group, consumer, count))

    def sweep_soon(self, group: str) -> None:
        """Make the next claim sweep ``group`` right away instead of waiting for the interval."""
        self._last_sweep.pop(group, None)

    def _claim_own_pending(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """Take back the entries this consumer name left pending (a restart after a crash)."""
        client, stream = self._keys.client, self._keys.stream
        pending = client.xpending_range(stream, group, "-", "+", count, consumername=consumer)
        if not pending:
            return []
        attempts = {id_to_str(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
        claimed = client.xclaim(stream, group, consumer, 0, list(attempts))
        return self._claimed(group, attempts, claimed, list(attempts))

    def _autoclaim(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """One XAUTOCLAIM page of entries idle past ``claim_min_idle_ms``, rate-limited between sweeps."""
        client, stream = self._keys.client, self._keys.stream
        cursor = self._cursor.get(group, "0-0")
        now = time.monotonic()
        interval = self._settings.claim_min_idle_ms / 1000 * _CLAIM_INTERVAL_FRACTION
        if cursor == "0-0" and now - self._last_sweep.get(group, 0.0) < interval:
            return []
        self._last_sweep[group] = now
        reply = client.xautoclaim(stream, group, consumer, self._settings.claim_min_idle_ms, start_id=cursor,
                                  count=count)
        next_cursor, claimed = id_to_str(reply[0]), reply[1]
        deleted = [id_to_str(i) for i in reply[2]] if len(reply) > 2 else []
        self._cursor[group] = next_cursor
        ids = [id_to_str(entry_id) for entry_id, _ in claimed]
        if not ids:
            if deleted:
                client.xack(stream, group, *deleted)
            return []
        pending = client.xpending_range(stream, group, min(ids, key=parse_id), max(ids, key=parse_id),
                                        len(ids) + 1024, consumername=consumer)
        attempts = {id_to_str(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return self._claimed(group, attempts, claimed, deleted)

    def _claimed(
        self, group: str, attempts: dict[str, int], claimed: list[Any], deleted: list[str]
    ) -> list[RawEntry]:
        entries, gone = [], [i for i in deleted if i not in attempts]
        for entry_id, fields in claimed:
            sid = id_to_str(entry_id)
            entries.append(raw_entry(sid, fields, attempts.get(sid, 1)))
        # Ids XCLAIM did not return were deleted meanwhile; Redis 7 already dropped them from the PEL.
        returned = {e.id for e in entries}
        gone += [i for i in attempts if i not in returned]
        if gone:
            self._keys.client.xack(self._keys.stream, group, *gone)
        return entries

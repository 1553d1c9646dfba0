"""The dead-letter stream ``<stream>:dlq``: writing letters (in one MULTI with the ack), listing, replaying and
purging them. Anyone can XADD to it, so reading a letter is total."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from frame_buffer.queue.base import DeadLetter, RawEntry
from frame_buffer.queue.redis_streams.entries import HEADER, MAX_ID_PART, PAYLOAD, id_to_str, parse_id, valid_id
from frame_buffer.queue.redis_streams.keys import StreamKeys


def _letter(entry_id: bytes, fields: dict[bytes, bytes | memoryview]) -> DeadLetter:
    """A dead letter from its entry; total, since anyone can XADD to the dead-letter stream. The reader
    hands values of 32 KiB and more out as memoryviews."""

    def text(key: bytes) -> str:
        return bytes(fields.get(key, b"")).decode(errors="replace")

    def number(key: bytes) -> int:
        value = bytes(fields.get(key, b""))
        return int(value) if value.isdigit() and len(value) <= 18 else 0

    header, payload = fields.get(HEADER), fields.get(PAYLOAD)
    return DeadLetter(
        id=id_to_str(entry_id), original_id=text(b"original_id"), group=text(b"group"),
        reason=text(b"reason"), error=text(b"error"), attempts=number(b"attempts"),
        dead_lettered_at_ms=number(b"at_ms"), header=None if header is None else bytes(header),
        payload=None if payload is None else bytes(payload),
    )


class DeadLetterStream:
    """The dead-letter stream of one stream."""

    def __init__(self, keys: StreamKeys) -> None:
        self._keys = keys

    def write(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """XADD the entry to the dead-letter stream with why, and XACK it in ``group``, in one MULTI."""
        fields: dict[Any, Any] = {
            b"reason": reason, b"error": error[:1000], b"attempts": entry.attempts,
            b"original_id": entry.id, b"group": group, b"at_ms": int(time.time() * 1000),
        }
        if entry.header is not None:
            fields[HEADER] = entry.header
        if entry.payload is not None:
            fields[PAYLOAD] = entry.payload
        keys = self._keys

        def move() -> None:
            keys.check_keys()
            pipe = keys.client.pipeline(transaction=True)
            pipe.xadd(keys.dlq, fields)
            pipe.xack(keys.stream, group, entry.id)
            pipe.execute()

        keys.call(move)

    def listing(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """XRANGE over the dead-letter stream."""
        if after and not valid_id(after):
            raise ValueError(f"after: {after!r} is not a Redis stream entry id")
        if after and parse_id(after) == (MAX_ID_PART, MAX_ID_PART):
            return []  # nothing can follow the largest id (and Redis refuses to start an interval after it)
        start = f"({after}" if after else "-"
        entries = self._keys.call(lambda: self._keys.client.xrange(self._keys.dlq, start, "+", count=count))
        return [_letter(entry_id, fields) for entry_id, fields in entries]

    def replay(self, ids: Iterable[str]) -> int:
        """XADD each dead letter back to the stream and XDEL it, in one MULTI each: replayed once."""
        keys = self._keys
        replayed = 0
        for entry_id in ids:
            if not valid_id(entry_id):
                continue  # not an id of this backend: not found
            found = keys.call(lambda i=entry_id: keys.client.xrange(keys.dlq, i, i))  # type: ignore[misc]
            if not found:
                continue
            fields = found[0][1]

            def move(i: str = entry_id, f: dict[bytes, bytes] = fields) -> None:
                keys.check_keys()
                pipe = keys.client.pipeline(transaction=True)
                pipe.xadd(keys.stream, {HEADER: f.get(HEADER, b""), PAYLOAD: f.get(PAYLOAD, b"")})
                pipe.xdel(keys.dlq, i)
                pipe.execute()

            keys.call(move)
            replayed += 1
        return replayed

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """XDEL the given dead letters, or DEL the whole dead-letter stream."""
        keys = self._keys
        if ids is None:
            def purge_all() -> int:
                pipe = keys.client.pipeline(transaction=True)
                pipe.xlen(keys.dlq)
                pipe.delete(keys.dlq)
                return int(pipe.execute()[0])

            return keys.call(purge_all)
        wanted = [entry_id for entry_id in ids if valid_id(entry_id)]  # other ones are not found
        return int(keys.call(lambda: keys.client.xdel(keys.dlq, *wanted))) if wanted else 0

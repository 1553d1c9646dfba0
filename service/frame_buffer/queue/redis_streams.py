"""Redis Streams backend: one stream per queue, consumer groups, XAUTOCLAIM recovery.

How this backend handles the known Redis Streams pitfalls (see docs/design.md):

* Trimming is by ``MINID`` at the oldest entry some group still needs (its oldest pending entry, or its
  last-delivered id), never by ``MAXLEN``: nothing unacknowledged is trimmed away.
* Publish waits while any group's backlog (lag + pending) reaches ``max_lag``, and treats an OOM reply
  (``maxmemory-policy noeviction``) the same way: backpressure, never a crash and never eviction.
* Dead consumers' entries are reclaimed with XAUTOCLAIM, paging with the returned cursor; ids that were
  deleted meanwhile (the third element of the reply, Redis 7) are acked so they leave the pending list.
* A consumer that restarts under its stable name first takes back its own pending entries.
* The socket timeout is longer than the XREADGROUP BLOCK time, and a read timeout is not a failure.
* redis-py's Python command packer is used even when hiredis is installed, because hiredis copies every
  payload into a new buffer; with the Python packer large payloads go to the socket as they are.
* Replies are read by :mod:`frame_buffer.queue.redis_reader`, which receives each payload straight into a
  buffer of its own instead of copying it four times as redis-py's reader does; a consumer gets payloads as
  read-only memoryviews.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import (
    BackendRefused,
    BackendUnavailable,
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueError,
    QueueSettings,
    QueueStats,
    RawEntry,
    StreamWrongType,
)
from frame_buffer.queue.redis_reader import FrameRESP2Parser

T = TypeVar("T")
HEADER, PAYLOAD = b"h", b"p"
#: How often consume() runs XAUTOCLAIM at most, relative to the claim idle time.
_CLAIM_INTERVAL_FRACTION = 0.25
_TRIM_EVERY_S = 0.5
#: ... or once this many bytes were published since the last trim. Redis frees trimmed entries inside XTRIM,
#: about 0.1 ms per MB here, and serves nobody meanwhile: 0.5 s of 100 KB frames at 1000/s was a 5 to 7 ms
#: stall twice a second, the largest part of p99. 4 MB per trim keeps each stall near 0.4 ms.
_TRIM_EVERY_BYTES = 4 * 1024 * 1024
#: Bytes asked of each recv into the reply reader's shared buffer. Measured: 64 KB costs the consumer 10 to 15
#: points more CPU than 1 MB at 640x480x3 (more recv calls), with no gain at 100 KB (docs/performance.md).
SOCKET_READ_SIZE = 1024 * 1024


#: Error codes of replies that mean the server refused these credentials or this user a command.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM")


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


#: An entry id as Redis writes it: milliseconds and sequence, each an unsigned 64-bit integer.
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_ID_PART = 2**64 - 1


def _valid_id(entry_id: object) -> bool:
    """Whether ``entry_id`` (from outside: the CLI, an operator) is an entry id; Redis refuses other ones."""
    match = _ENTRY_ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    return match is not None and max(int(match[1]), int(match[2])) <= _MAX_ID_PART


def _id_to_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamsQueue(FrameQueue):
    """:class:`FrameQueue` on a Redis stream.

    Args:
        url: ``redis://[:password@]host:port/db``.
        settings: stream name, groups, limits (see :class:`QueueSettings`).
        codec: the wire codec.
        block_margin_s: how much longer than the longest BLOCK the socket timeout is.
        max_block_ms: the longest BLOCK this instance will use; sets the socket timeout.
        poll_s: how often publish re-checks lag while it waits under backpressure.
    """

    backend = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        *,
        max_block_ms: int = 5000,
        block_margin_s: float = 5.0,
        poll_s: float = 0.01,
    ) -> None:
        super().__init__(settings, codec)
        self.url = url
        self.display_url = masked_url(url)
        self.max_block_ms = max_block_ms
        self.poll_s = poll_s
        # Typed as Any: redis-py's reply types are RESP2/RESP3 unions; replies are parsed in this module.
        self.client: Any = redis.Redis.from_url(
            url,
            socket_timeout=max_block_ms / 1000 + block_margin_s,
            socket_connect_timeout=5.0,
            health_check_interval=30,
            # Replies through FrameSocketBuffer: payloads are received straight into their own buffers.
            protocol=2,
            parser_class=FrameRESP2Parser,
            socket_read_size=SOCKET_READ_SIZE,
            command_packer=PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode),  # type: ignore[no-untyped-call]
        )
        kwargs = self.client.connection_pool.connection_kwargs
        self.address = kwargs.get("path") or f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"
        self._stream = self.settings.stream
        self._dlq = self.settings.dead_letter_stream
        self._groups_ready: set[str] = set()
        self._recovered: set[tuple[str, str]] = set()
        self._claim_cursor: dict[str, str] = {}
        self._last_claim: dict[str, float] = {}
        self._last_trim = 0.0
        self._bytes_since_trim = 0
        for group in self.settings.groups:
            self.ensure_group(group)

    # -- plumbing ---------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """Run a Redis call, turning connection-level failures into :class:`BackendUnavailable`, refused
        credentials or permissions into :class:`BackendRefused`, a key of the wrong type into
        :class:`StreamWrongType`."""
        try:
            return fn()
        except redis.RedisError as exc:
            mine = self._translate(exc)
            if mine is None:
                raise  # OOM and BUSYGROUP are the caller's to handle; anything else is a bug
            raise mine from exc

    def _translate(self, exc: redis.RedisError) -> QueueError | None:
        """The error of ours that ``exc`` stands for, if any."""
        # A pipeline's error says which command failed first ("Command # 1 (XADD ...) of pipeline caused error:").
        text = str(exc).rpartition(" of pipeline caused error: ")[2]
        # redis-py names the code in ``status_code`` where it maps the reply to a class of its own; a reply it
        # leaves a plain ResponseError (WRONGTYPE) starts with the code instead.
        code = getattr(exc, "status_code", None) or text.partition(" ")[0]
        if code in _REFUSALS or isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
            reason = text if text.startswith(str(code)) else f"{code} {text}"
            return BackendRefused(
                f"redis at {self.address} refused {self.display_url}: {reason} (check the user, password and ACL)")
        if code == "READONLY":  # a replica (a primary demoted by a failover, or the wrong address)
            return BackendRefused(f"redis at {self.address} refused {self.display_url}: READONLY {text} "
                                  "(a replica: point the URL at the primary)")
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # BusyLoadingError (LOADING) included
            return BackendUnavailable(f"redis at {self.address} unavailable: {exc}")
        if code == "WRONGTYPE":
            return self._wrong_type()
        if "exhausted the last possible ID" in text:  # someone wrote an entry with the largest id (raw XADD)
            return QueueError(f"{self.display_url}: stream {self._stream!r} or {self._dlq!r} holds an entry with "
                              "the largest possible id, after which nothing can be added: delete that key or "
                              "choose another FRAME_BUFFER_STREAM")
        return None

    def _not_a_stream(self) -> tuple[str, str] | None:
        """The first of the stream's two keys (itself, its dead-letter stream) that holds something else, with
        the type it holds; None when both are streams or absent."""
        keys = (self._stream, self._dlq)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        kinds = [_id_to_str(kind) for kind in pipe.execute()]
        return next(((key, kind) for key, kind in zip(keys, kinds, strict=True) if kind not in ("stream", "none")),
                    None)

    def _wrong_type(self) -> StreamWrongType:
        """The error for a WRONGTYPE reply, naming the key that is not a stream and what it holds."""
        found = None
        with contextlib.suppress(redis.RedisError):  # then the report is the WRONGTYPE, told less precisely
            found = self._not_a_stream()
        key, kind = found or (self._stream, "value of another type")
        return StreamWrongType(f"{self.display_url}: key {key!r} holds a {kind}, not a stream: "
                               "choose another FRAME_BUFFER_STREAM or delete the key")

    def _check_keys(self) -> None:
        """Refuse before a MULTI that moves an entry between the two keys: WRONGTYPE is an error at EXEC
        time, which does not abort a transaction, so the XACK or XDEL after a failed XADD would still run and
        the entry would be lost."""
        if self._not_a_stream() is not None:
            raise self._wrong_type()

    # -- publishing -------------------------------------------------------------------------------------
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """XADD every entry in one pipeline, after waiting for capacity."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        self._await_capacity(len(entries), deadline)
        while True:
            try:
                ids = self._call(lambda: self._xadd_all(entries))
            except redis.exceptions.OutOfMemoryError:
                # noeviction at maxmemory: free what consumers have acked, then wait for them.
                self.trim()
                self._wait_or_timeout(deadline, f"redis at {self.address} is at maxmemory")
                continue
            self._count_published(len(entries))
            self._bytes_since_trim += sum(encoded.nbytes for _camera, encoded in entries)
            if (self._bytes_since_trim >= _TRIM_EVERY_BYTES
                    or time.monotonic() - self._last_trim >= _TRIM_EVERY_S):
                self.trim()
            return ids

    def _xadd_all(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        if len(entries) == 1:  # one XADD is all or nothing by itself: no MULTI/EXEC around it
            encoded = entries[0][1]
            return [_id_to_str(self.client.xadd(self._stream, {HEADER: encoded.header, PAYLOAD: encoded.payload}))]
        # MULTI/EXEC: under OOM the whole batch is refused (EXECABORT), never a prefix of it, so a retry
        # neither duplicates frames nor reorders a camera.
        pipe = self.client.pipeline(transaction=True)
        for _camera, encoded in entries:
            pipe.xadd(self._stream, {HEADER: encoded.header, PAYLOAD: encoded.payload})
        return [_id_to_str(entry_id) for entry_id in pipe.execute()]

    def _measure_backlog(self) -> tuple[int, bool]:
        backlog = self._call(self._slowest_backlog)
        return backlog, backlog > 0

    def _pause(self, remaining: float) -> None:
        time.sleep(self.poll_s)

    def _groups(self) -> list[dict[str, Any]]:
        """XINFO GROUPS of the stream; none while the stream does not exist (one round trip either way)."""
        try:
            return list(self.client.xinfo_groups(self._stream))
        except redis.ResponseError as exc:
            if "no such key" not in str(exc):
                raise  # WRONGTYPE and the like are the caller's to report
            return []

    def _slowest_backlog(self) -> int:
        """The largest lag + pending over all groups; the stream length when there is no group yet."""
        groups = self._groups()
        if not groups:
            return int(self.client.xlen(self._stream))
        length = None
        worst = 0
        for group in groups:
            lag = group.get("lag")
            if lag is None:  # Redis cannot tell after deletions: count what is past last-delivered.
                if length is None:
                    length = int(self.client.xlen(self._stream))
                lag = length
            worst = max(worst, int(lag) + int(group["pending"]))
        return worst

    def trim(self) -> None:
        """Trim entries that every group has acknowledged (XTRIM MINID, never MAXLEN)."""
        self._last_trim = time.monotonic()
        self._bytes_since_trim = 0
        try:
            safe = self._call(self._oldest_needed_id)
            if safe is not None:
                self._call(lambda: self.client.xtrim(self._stream, minid=safe, approximate=False))
        except BackendUnavailable:
            pass  # trimming is housekeeping; the publish path reports the outage itself

    def _oldest_needed_id(self) -> str | None:
        groups = self._groups()
        if not groups:
            return None  # no stream, or frames are kept for the first group to come
        needed: list[tuple[int, int]] = []
        # Asked even when XINFO said nothing is pending: entries may have been acked or delivered since.
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            ms, seq = _parse_id(_id_to_str(group["last-delivered-id"]))
            # The entry after last-delivered is the first one the group has not seen (none after the largest id).
            needed.append((ms, seq + 1) if seq < _MAX_ID_PART else (ms + 1, 0) if ms < _MAX_ID_PART else (ms, seq))
            pipe.xpending(self._stream, group["name"])
        for summary in pipe.execute():
            if summary["min"] is not None:
                needed.append(_parse_id(_id_to_str(summary["min"])))
        ms, seq = min(needed)
        return f"{ms}-{seq}"

    # -- consuming --------------------------------------------------------------------------------------
    def ensure_group(self, group: str) -> None:
        """XGROUP CREATE at id 0 with MKSTREAM; an existing group is left as it is."""
        if group in self._groups_ready:
            return
        try:
            self._call(lambda: self.client.xgroup_create(self._stream, group, id="0", mkstream=True))
        except redis.exceptions.OutOfMemoryError:
            # XGROUP CREATE is refused at maxmemory even when the group exists: look before failing. The
            # stream may not exist yet either; that is still the OOM to report, not XINFO's "no such key".
            if not any(_id_to_str(g["name"]) == group for g in self._call(self._groups)):
                raise
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(group)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        if (group, consumer) not in self._recovered:
            self._recovered.add((group, consumer))
            own = self._call(lambda: self._claim_own_pending(group, consumer, count))
            if own:
                return own
        reclaimed = self._call(lambda: self._autoclaim(group, consumer, count))
        if reclaimed:
            return reclaimed
        block = min(block_ms, self.max_block_ms)
        try:
            reply = self._call(
                lambda: self.client.xreadgroup(group, consumer, {self._stream: ">"}, count=count, block=block)
            )
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, redis.TimeoutError):
                return []  # a blocking read that timed out is not a failure
            raise
        if not reply:
            return []
        return [self._raw(entry_id, fields, 1) for entry_id, fields in reply[0][1]]

    def _raw(self, entry_id: bytes | str, fields: dict[bytes, bytes] | None, attempts: int) -> RawEntry:
        fields = fields or {}
        sid = _id_to_str(entry_id)
        return RawEntry(sid, fields.get(HEADER), fields.get(PAYLOAD), attempts, sid)

    def _claim_own_pending(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """Take back the entries this consumer name left pending (a restart after a crash)."""
        pending = self.client.xpending_range(self._stream, group, "-", "+", count, consumername=consumer)
        if not pending:
            return []
        attempts = {_id_to_str(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
        claimed = self.client.xclaim(self._stream, group, consumer, 0, list(attempts))
        return self._claimed(group, attempts, claimed, list(attempts))

    def _autoclaim(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """One XAUTOCLAIM page of entries idle past ``claim_min_idle_ms``, rate-limited between sweeps."""
        cursor = self._claim_cursor.get(group, "0-0")
        now = time.monotonic()
        interval = self.settings.claim_min_idle_ms / 1000 * _CLAIM_INTERVAL_FRACTION
        if cursor == "0-0" and now - self._last_claim.get(group, 0.0) < interval:
            return []
        self._last_claim[group] = now
        reply = self.client.xautoclaim(
            self._stream, group, consumer, self.settings.claim_min_idle_ms, start_id=cursor, count=count
        )
        next_cursor, claimed = _id_to_str(reply[0]), reply[1]
        deleted = [_id_to_str(i) for i in reply[2]] if len(reply) > 2 else []
        self._claim_cursor[group] = next_cursor
        ids = [_id_to_str(entry_id) for entry_id, _ in claimed]
        if not ids:
            if deleted:
                self.client.xack(self._stream, group, *deleted)
            return []
        pending = self.client.xpending_range(self._stream, group, min(ids, key=_parse_id),
                                             max(ids, key=_parse_id), len(ids) + 1024, consumername=consumer)
        attempts = {_id_to_str(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return self._claimed(group, attempts, claimed, deleted)

    def _claimed(
        self, group: str, attempts: dict[str, int], claimed: list[Any], deleted: list[str]
    ) -> list[RawEntry]:
        entries, gone = [], [i for i in deleted if i not in attempts]
        for entry_id, fields in claimed:
            sid = _id_to_str(entry_id)
            entries.append(self._raw(sid, fields, attempts.get(sid, 1)))
        # Ids XCLAIM did not return were deleted meanwhile; Redis 7 already dropped them from the PEL.
        returned = {e.id for e in entries}
        gone += [i for i in attempts if i not in returned]
        if gone:
            self.client.xack(self._stream, group, *gone)
        return entries

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """XACK per group, one call per group."""
        by_group: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_group.setdefault(delivery.group, []).append(delivery.id)
        for group, ids in by_group.items():
            self._call(lambda g=group, i=ids: self.client.xack(self._stream, g, *i))  # type: ignore[misc]

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Leave the entry pending but set its idle time so that XAUTOCLAIM takes it after ``delay_s``.

        XCLAIM with JUSTID does not count a delivery; the reclaim that redelivers it does.
        """
        idle = max(0, self.settings.claim_min_idle_ms - int(delay_s * 1000))
        self._call(lambda: self.client.xclaim(
            self._stream, delivery.group, delivery.consumer, 0, [delivery.id], idle=idle, justid=True
        ))
        if delay_s <= 0:  # make the next consume sweep right away instead of waiting for the interval
            self._last_claim.pop(delivery.group, None)

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        fields: dict[Any, Any] = {
            b"reason": reason, b"error": error[:1000], b"attempts": entry.attempts,
            b"original_id": entry.id, b"group": group, b"at_ms": int(time.time() * 1000),
        }
        if entry.header is not None:
            fields[HEADER] = entry.header
        if entry.payload is not None:
            fields[PAYLOAD] = entry.payload

        def move() -> None:
            self._check_keys()
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self._dlq, fields)
            pipe.xack(self._stream, group, entry.id)
            pipe.execute()

        self._call(move)

    # -- inspection -------------------------------------------------------------------------------------
    def stats(self, group: str) -> QueueStats:
        """XLEN, XINFO GROUPS and the oldest pending entry of ``group``."""

        def read() -> QueueStats:
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self._stream)
            pipe.xlen(self._dlq)
            depth, dead = pipe.execute()
            info = next((g for g in self._groups() if _id_to_str(g["name"]) == group), {})
            if not info:
                return QueueStats(int(depth), int(depth), 0, 0, int(dead))
            pending = int(info["pending"])
            oldest = 0
            if pending:
                first = self.client.xpending_range(self._stream, group, "-", "+", 1)
                oldest = int(first[0]["time_since_delivered"]) if first else 0
            lag = info.get("lag")
            return QueueStats(int(depth), int(depth if lag is None else lag), pending, oldest, int(dead))

        return self._call(read)

    # -- dead letters -----------------------------------------------------------------------------------
    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """XRANGE over the dead-letter stream."""
        if after and not _valid_id(after):
            raise ValueError(f"after: {after!r} is not a Redis stream entry id")
        if after and _parse_id(after) == (_MAX_ID_PART, _MAX_ID_PART):
            return []  # nothing can follow the largest id (and Redis refuses to start an interval after it)
        start = f"({after}" if after else "-"
        entries = self._call(lambda: self.client.xrange(self._dlq, start, "+", count=count))
        return [self._dead_letter_entry(entry_id, fields) for entry_id, fields in entries]

    @staticmethod
    def _dead_letter_entry(entry_id: bytes, fields: dict[bytes, bytes | memoryview]) -> DeadLetter:
        """A dead letter from its entry; total, since anyone can XADD to the dead-letter stream. The reader
        hands values of 32 KiB and more out as memoryviews."""

        def text(key: bytes) -> str:
            return bytes(fields.get(key, b"")).decode(errors="replace")

        def number(key: bytes) -> int:
            value = bytes(fields.get(key, b""))
            return int(value) if value.isdigit() and len(value) <= 18 else 0

        header, payload = fields.get(HEADER), fields.get(PAYLOAD)
        return DeadLetter(
            id=_id_to_str(entry_id), original_id=text(b"original_id"), group=text(b"group"),
            reason=text(b"reason"), error=text(b"error"), attempts=number(b"attempts"),
            dead_lettered_at_ms=number(b"at_ms"), header=None if header is None else bytes(header),
            payload=None if payload is None else bytes(payload),
        )

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """XADD each dead letter back to the stream and XDEL it, in one MULTI each: replayed once."""
        replayed = 0
        for entry_id in ids:
            if not _valid_id(entry_id):
                continue  # not an id of this backend: not found
            found = self._call(lambda i=entry_id: self.client.xrange(self._dlq, i, i))  # type: ignore[misc]
            if not found:
                continue
            fields = found[0][1]

            def move(i: str = entry_id, f: dict[bytes, bytes] = fields) -> None:
                self._check_keys()
                pipe = self.client.pipeline(transaction=True)
                pipe.xadd(self._stream, {HEADER: f.get(HEADER, b""), PAYLOAD: f.get(PAYLOAD, b"")})
                pipe.xdel(self._dlq, i)
                pipe.execute()

            self._call(move)
            replayed += 1
        return replayed

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """XDEL the given dead letters, or DEL the whole dead-letter stream."""
        if ids is None:
            def purge_all() -> int:
                pipe = self.client.pipeline(transaction=True)
                pipe.xlen(self._dlq)
                pipe.delete(self._dlq)
                return int(pipe.execute()[0])

            return self._call(purge_all)
        wanted = [entry_id for entry_id in ids if _valid_id(entry_id)]  # other ones are not found
        return int(self._call(lambda: self.client.xdel(self._dlq, *wanted))) if wanted else 0

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

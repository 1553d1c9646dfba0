""":class:`RedisStreamsQueue`: the :class:`FrameQueue` interface on one Redis stream and its consumer groups."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import (
    BackendUnavailable,
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueSettings,
    QueueStats,
    RawEntry,
)
from frame_buffer.queue.redis_streams.claims import Claims
from frame_buffer.queue.redis_streams.clients import Routing, standalone_client
from frame_buffer.queue.redis_streams.dead_letters import DeadLetterStream
from frame_buffer.queue.redis_streams.entries import HEADER, PAYLOAD, id_to_str, raw_entry
from frame_buffer.queue.redis_streams.keys import StreamKeys, standalone_address
from frame_buffer.queue.redis_streams.progress import TRIM_EVERY_BYTES, TRIM_EVERY_S, TRIM_SCRIPT, slowest_backlog
from frame_buffer.queue.settings import DEFAULT_REDIS_URL

#: Attempts of a publish that meets MOVED (nothing written) before it is a failure: a slot map read again after
#: the first MOVED is right unless the slot moved once more meanwhile.
_MOVED_RETRIES = 3


class ReplicaShortfall(BackendUnavailable):
    """Fewer replicas than ``FRAME_BUFFER_REDIS_REPLICA_ACKS`` acknowledged a publish in time (``WAIT``)."""


@dataclass(frozen=True)
class Shard:
    """One shard stream of a queue: its two keys, and the routing of the client that serves them."""

    routing: Routing
    stream: str
    dead_letters: str


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
        url: str = DEFAULT_REDIS_URL,
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        *,
        max_block_ms: int = 5000,
        block_margin_s: float = 5.0,
        poll_s: float = 0.01,
        replica_acks: int = 0,
        replica_timeout_ms: int = 1000,
        shard: Shard | None = None,
    ) -> None:
        super().__init__(settings, codec)
        self.url = url
        self.max_block_ms = max_block_ms
        self.poll_s = poll_s
        self.replica_acks = replica_acks
        self.replica_timeout_ms = replica_timeout_ms
        self._owns_client = shard is None
        if shard is None:
            client = standalone_client(url, max_block_ms, block_margin_s)
            shard = Shard(Routing(client, standalone_address(client)), self.settings.stream,
                          self.settings.dead_letter_stream)
        self._routing = shard.routing
        # Typed as Any: redis-py's reply types are RESP2/RESP3 unions; replies are parsed in this package.
        self.client: Any = shard.routing.client
        self._keys = StreamKeys(self.client, url, shard.stream, shard.dead_letters, shard.routing.address)
        self.display_url, self.address = self._keys.display_url, self._keys.address
        self._stream = shard.stream
        self._claims = Claims(self._keys, self.settings)
        self._letters = DeadLetterStream(self._keys)
        self._groups_ready: set[str] = set()
        self._last_trim = 0.0
        self._bytes_since_trim = 0
        self._trim_sha = hashlib.sha1(TRIM_SCRIPT.encode()).hexdigest()  # loaded at the first NOSCRIPT
        for group in self.settings.groups:
            self.ensure_group(group)

    # -- publishing -------------------------------------------------------------------------------------
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """XADD every entry in one round trip, after waiting for capacity; a trim that is due rides along."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        self._await_capacity(len(entries), deadline)
        self._bytes_since_trim += sum(encoded.nbytes for _camera, encoded in entries)
        while True:
            due = self._bytes_since_trim >= TRIM_EVERY_BYTES or time.monotonic() - self._last_trim >= TRIM_EVERY_S
            try:
                ids = self._keys.call(lambda trim=due: self._xadd_all(entries, trim))  # type: ignore[misc]
            except redis.exceptions.OutOfMemoryError:
                # noeviction at maxmemory: free what consumers have acked, then wait for them.
                self.trim()
                self._wait_or_timeout(deadline, f"redis at {self.address} is at maxmemory")
                continue
            self._count_published(len(entries))
            return ids

    def _xadd_all(self, entries: Sequence[tuple[str, EncodedFrame]], trim: bool) -> list[str]:
        if len(entries) == 1 and not trim and not self.replica_acks and not self._routing.cluster:
            encoded = entries[0][1]  # one XADD is all or nothing by itself: no MULTI/EXEC around it
            return [id_to_str(self.client.xadd(self._stream, {HEADER: encoded.header, PAYLOAD: encoded.payload}))]
        # MULTI/EXEC for a batch: under OOM the whole batch is refused (EXECABORT), never a prefix of it, so a
        # retry neither duplicates frames nor reorders a camera. The trim comes after the XADDs, in the same
        # round trip (in the transaction too: XTRIM is allowed under OOM, and a failed trim fails no XADD).
        # WAIT follows EXEC on the same connection (it counts that connection's writes); see clients.py for
        # why this is the shard master's own client and not redis-py's cluster transaction.
        attempt = 1
        while True:
            replies = self._send(entries, trim)
            acked = replies.pop() if self.replica_acks else None
            executed = replies[-1]
            if isinstance(executed, list):
                break
            # EXECABORT: a command was refused when queued (OOM, MOVED, ...), and nothing was written.
            refused = next((r for r in replies if isinstance(r, Exception)), executed)
            if not isinstance(refused, redis.exceptions.MovedError) or attempt == _MOVED_RETRIES:
                raise refused
            attempt += 1
            self._routing.refresh()  # the slot moved (a failover, a resharding): ask its new master
        if trim:
            self._trimmed(executed.pop())
        for reply in executed:
            if isinstance(reply, Exception):
                raise reply
        if acked is not None and (isinstance(acked, Exception) or int(acked) < self.replica_acks):
            # Written on the master, not known to be on a replica: a failed publish (retried, then spooled);
            # a retry may write these frames twice, which is a duplicate and never a loss.
            raise ReplicaShortfall(
                f"redis at {self._routing.where(self._stream)}: {acked} of {self.replica_acks} replica(s) "
                f"acknowledged the publish within {self.replica_timeout_ms} ms")
        return [id_to_str(entry_id) for entry_id in executed]

    def _send(self, entries: Sequence[tuple[str, EncodedFrame]], trim: bool) -> list[Any]:
        """MULTI, the XADDs, the trim if due, EXEC and WAIT if asked, in one round trip on the shard's master."""
        pipe = self._routing.writer(self._stream).pipeline(transaction=False)
        pipe.execute_command("MULTI")
        for _camera, encoded in entries:
            pipe.xadd(self._stream, {HEADER: encoded.header, PAYLOAD: encoded.payload})
        if trim:
            pipe.execute_command("EVALSHA", self._trim_sha, 1, self._stream)
        pipe.execute_command("EXEC")
        if self.replica_acks:
            pipe.execute_command("WAIT", self.replica_acks, self.replica_timeout_ms)
        try:
            return list(pipe.execute(raise_on_error=False))
        except (redis.ConnectionError, redis.TimeoutError):
            self._routing.refresh()  # the master may be gone: the next attempt asks the slot map again
            raise

    def _trimmed(self, reply: object) -> None:
        """The trim's reply. NOSCRIPT (first use, or a server restarted or flushed since): load it and trim now.
        Never raises: the XADDs before it are done, and a publish that failed on housekeeping would be
        retried and written twice; another failure is left to the next trim."""
        self._last_trim, self._bytes_since_trim = time.monotonic(), 0
        if isinstance(reply, redis.exceptions.NoScriptError):
            with contextlib.suppress(redis.RedisError):
                self._run_trim()

    def _measure_backlog(self) -> tuple[int, bool]:
        backlog = self._keys.call(lambda: slowest_backlog(self._keys))
        return backlog, backlog > 0

    def _pause(self, remaining: float) -> None:
        time.sleep(self.poll_s)

    def trim(self) -> None:
        """Trim entries that every group has acknowledged (XTRIM MINID, never MAXLEN; :data:`TRIM_SCRIPT`)."""
        self._last_trim, self._bytes_since_trim = time.monotonic(), 0
        with contextlib.suppress(BackendUnavailable):  # housekeeping; the publish path reports an outage itself
            self._keys.call(self._run_trim)

    def _run_trim(self) -> int:
        try:
            return int(self.client.evalsha(self._trim_sha, 1, self._stream))
        except redis.exceptions.NoScriptError:
            self.client.script_load(TRIM_SCRIPT)
            return int(self.client.evalsha(self._trim_sha, 1, self._stream))

    # -- consuming --------------------------------------------------------------------------------------
    def ensure_group(self, group: str) -> None:
        """XGROUP CREATE at id 0 with MKSTREAM; an existing group is left as it is."""
        if group in self._groups_ready:
            return
        try:
            self._keys.call(lambda: self.client.xgroup_create(self._stream, group, id="0", mkstream=True))
        except redis.exceptions.OutOfMemoryError:
            # XGROUP CREATE is refused at maxmemory even when the group exists: look before failing. The
            # stream may not exist yet either; that is still the OOM to report, not XINFO's "no such key".
            if not any(id_to_str(g["name"]) == group for g in self._keys.call(self._keys.groups)):
                raise
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(group)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        claimed = self.claim(group, consumer, count)
        if claimed:
            return claimed
        return self.read_new(group, consumer, count, block_ms)

    def claim(self, group: str, consumer: str, count: int) -> list[RawEntry]:
        """Entries to take back before new ones (see :class:`Claims`); often none, without a round trip."""
        return self._claims.claim(group, consumer, count)

    def read_new(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        """Up to ``count`` entries never delivered to ``group``, waiting up to ``block_ms`` for them."""
        block = min(block_ms, self.max_block_ms) or None  # BLOCK 0 would wait forever: 0 asks without waiting
        try:
            reply = self._keys.call(
                lambda: self.client.xreadgroup(group, consumer, {self._stream: ">"}, count=count, block=block)
            )
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, redis.TimeoutError):
                return []  # a blocking read that timed out is not a failure
            raise
        if not reply:
            return []
        return [raw_entry(entry_id, fields, 1) for entry_id, fields in reply[0][1]]

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """XACK per group, one call per group."""
        by_group: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_group.setdefault(delivery.group, []).append(delivery.id)
        for group, ids in by_group.items():
            self._keys.call(lambda g=group, i=ids: self.client.xack(self._stream, g, *i))  # type: ignore[misc]

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Leave the entry pending but set its idle time so that XAUTOCLAIM takes it after ``delay_s``.

        XCLAIM with JUSTID does not count a delivery; the reclaim that redelivers it does.
        """
        self.give_back(delivery.group, delivery.consumer, [delivery.id], delay_s)

    def give_back(self, group: str, consumer: str, ids: list[str], delay_s: float = 0.0) -> None:
        """:meth:`nack` of entries by id (a shard reader's batch that nobody took)."""
        idle = max(0, self.settings.claim_min_idle_ms - int(delay_s * 1000))
        self._keys.call(lambda: self.client.xclaim(self._stream, group, consumer, 0, ids, idle=idle, justid=True))
        if delay_s <= 0:  # make the next consume sweep right away instead of waiting for the interval
            self._claims.sweep_soon(group)

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        self._letters.write(group, entry, reason, error)

    # -- inspection -------------------------------------------------------------------------------------
    def stats(self, group: str) -> QueueStats:
        """XLEN, XINFO GROUPS and the oldest pending entry of ``group``."""

        def read() -> QueueStats:
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self._stream)
            pipe.xlen(self._keys.dlq)
            depth, dead = pipe.execute()
            info = next((g for g in self._keys.groups() if id_to_str(g["name"]) == group), {})
            if not info:
                return QueueStats(int(depth), int(depth), 0, 0, int(dead))
            pending = int(info["pending"])
            oldest = 0
            if pending:
                first = self.client.xpending_range(self._stream, group, "-", "+", 1)
                oldest = int(first[0]["time_since_delivered"]) if first else 0
            lag = info.get("lag")
            return QueueStats(int(depth), int(depth if lag is None else lag), pending, oldest, int(dead))

        return self._keys.call(read)

    # -- the keys themselves ------------------------------------------------------------------------------
    def key_names(self) -> list[str]:
        """The stream and its dead-letter stream."""
        return [self._stream, self._keys.dlq]

    def existing_keys(self) -> set[str]:
        """Which of :meth:`key_names` exist (a command deletes at the end only what it made)."""
        return {key for key in self.key_names() if self._keys.call(lambda k=key: self.client.exists(k))}  # type: ignore[misc]

    def delete_keys(self) -> int:
        """DEL the stream and its dead letters, with every group and entry: for a command's own stream."""
        return sum(int(self._keys.call(lambda k=key: self.client.delete(k))) for key in self.key_names())  # type: ignore[misc]

    def used_memory_bytes(self) -> int:
        """The server's ``used_memory`` (every master's, summed, in a cluster)."""
        def read() -> int:
            if self._routing.cluster:
                info = self.client.info("memory", target_nodes=self.client.PRIMARIES)
                return sum(int(node["used_memory"]) for node in info.values())
            return int(self.client.info("memory")["used_memory"])

        return self._keys.call(read)

    # -- dead letters -----------------------------------------------------------------------------------
    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """XRANGE over the dead-letter stream."""
        return self._letters.listing(count, after)

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """XADD each dead letter back to the stream and XDEL it, in one MULTI each: replayed once."""
        return self._letters.replay(ids)

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """XDEL the given dead letters, or DEL the whole dead-letter stream."""
        return self._letters.purge(ids)

    def close(self) -> None:
        """Close the connection pool (of a shard: its queue closes the shared client)."""
        if self._owns_client:
            self.client.close()

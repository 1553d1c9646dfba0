""":class:`ShardedStreamsQueue`: the :class:`FrameQueue` interface over several shard streams, on one Redis
server or a Redis Cluster (docs/scaling.md).

Each shard is a :class:`RedisStreamsQueue` on one stream key (its keys share a hash slot), so every promise of
the single stream holds per shard: publish is one ``MULTI`` per shard, backpressure bounds each shard's backlog
by ``max_lag``, trimming, claims and the restart self-claim run on every shard, dead letters move within their
shard's slot. This class routes: a camera's frames to its shard (so a camera's order is kept), deliveries and
dead letters back to the shard they came from. Ids carry their shard, ``<shard>/<entry id>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

from frame_buffer.checks import server_address
from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import DeadLetter, Delivery, FrameQueue, QueueError, QueueSettings, QueueStats, RawEntry
from frame_buffer.queue.redis_streams.clients import Routing, cluster_client, standalone_client
from frame_buffer.queue.redis_streams.entries import parse_id, valid_id
from frame_buffer.queue.redis_streams.keys import standalone_address
from frame_buffer.queue.redis_streams.queue import RedisStreamsQueue, Shard
from frame_buffer.queue.redis_streams.readers import Handoff, ShardReader
from frame_buffer.queue.redis_streams.shards import ShardLayout


def split_id(tagged: str) -> tuple[int, str] | None:
    """``(shard, entry id)`` of an id of this queue (``<shard>/<id>``), None for anything else (from outside)."""
    shard, sep, entry_id = tagged.partition("/") if isinstance(tagged, str) else ("", "", "")
    if not sep or not (shard.isascii() and shard.isdigit()) or len(shard) > 4 or not valid_id(entry_id):
        return None
    return int(shard), entry_id


class _Readers:
    """The shard readers of one (group, consumer) of this process, and their hand-off."""

    def __init__(self) -> None:
        self.handoff = Handoff()
        self.threads: dict[int, ShardReader] = {}


class ShardedStreamsQueue(FrameQueue):
    """:class:`FrameQueue` on ``shards`` Redis streams, one Redis server or a Redis Cluster.

    Args:
        url: one ``redis://`` URL, or in cluster mode comma-separated seed URLs (one answering is enough).
        settings: stream name, groups, limits; ``max_lag`` bounds each shard.
        codec: the wire codec.
        shards: how many shard streams.
        cluster: a Redis Cluster (keys are hash-tagged even with one shard).
        replica_acks, replica_timeout_ms: ``WAIT`` after each shard's publish (see :class:`RedisStreamsQueue`).
        max_block_ms: the longest BLOCK of a shard reader.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        *,
        shards: int,
        cluster: bool,
        replica_acks: int = 0,
        replica_timeout_ms: int = 1000,
        max_block_ms: int = 5000,
        block_margin_s: float = 5.0,
        poll_s: float = 0.01,
    ) -> None:
        super().__init__(settings, codec)
        self.layout = ShardLayout(self.settings.stream, shards, cluster)
        seeds = url.split(",")
        self.url = seeds[0]
        self.max_block_ms = max_block_ms
        self.poll_s = poll_s
        client: Any = (cluster_client(seeds, max_block_ms, block_margin_s) if cluster
                       else standalone_client(self.url, max_block_ms, block_margin_s))
        address = ",".join(map(server_address, seeds)) if cluster else standalone_address(client)
        self.routing = Routing(client, address)
        self.client = client
        self.shards: list[RedisStreamsQueue] = []
        try:
            for stream, dead_letters in self.layout.shard_keys():
                self.shards.append(RedisStreamsQueue(
                    self.url, self.settings, self.codec, max_block_ms=max_block_ms, poll_s=poll_s,
                    replica_acks=replica_acks, replica_timeout_ms=replica_timeout_ms,
                    shard=Shard(self.routing, stream, dead_letters)))
        except BaseException:
            client.close()
            raise
        self.display_url, self.address = self.shards[0].display_url, address
        self._readers: dict[tuple[str, str], _Readers] = {}

    # -- publishing -------------------------------------------------------------------------------------
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Each shard's part in one transaction of its own, shard by shard; on a failure the error's
        ``written`` names the positions that earlier shards stored."""
        parts: dict[int, list[int]] = {}
        for position, (camera, _encoded) in enumerate(entries):
            parts.setdefault(self.layout.shard_of(camera), []).append(position)
        ids = [""] * len(entries)
        written: list[int] = []
        for shard, positions in parts.items():
            try:
                got = self.shards[shard].publish_encoded([entries[i] for i in positions])
            except QueueError as exc:
                exc.written = tuple(sorted(written + [positions[i] for i in exc.written]))
                raise
            for position, entry_id in zip(positions, got, strict=True):
                ids[position] = f"{shard}/{entry_id}"
            written += positions
        return ids

    def _measure_backlog(self) -> tuple[int, bool]:
        measured = [shard._measure_backlog() for shard in self.shards]
        return max(backlog for backlog, _ in measured), any(waiting for _, waiting in measured)

    def _pause(self, remaining: float) -> None:
        time.sleep(min(self.poll_s, remaining))

    def trim(self) -> None:
        """Trim every shard (each at its own slowest group)."""
        for shard in self.shards:
            shard.trim()

    # -- consuming --------------------------------------------------------------------------------------
    def ensure_group(self, group: str) -> None:
        """Declare ``group`` on every shard."""
        for shard in self.shards:
            shard.ensure_group(group)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        for index, shard in enumerate(self.shards):  # no round trip unless a shard's sweep is due
            claimed = shard.claim(group, consumer, count)
            if claimed:
                return [self._tagged(index, entry) for entry in claimed]
        readers = self._start_readers(group, consumer, count)
        got = readers.handoff.take(block_ms / 1000)
        if got is None:
            if block_ms > 0:
                return []
            # Asked not to wait: the readers had no time to ask, so ask every shard here, without blocking.
            return next(([self._tagged(index, entry) for entry in read] for index, shard in enumerate(self.shards)
                         if (read := shard.read_new(group, consumer, count, 0))), [])
        index, batch = got
        if isinstance(batch, BaseException):
            raise batch
        return [self._tagged(index, entry) for entry in batch]

    def _start_readers(self, group: str, consumer: str, count: int) -> _Readers:
        """The readers of (``group``, ``consumer``), (re)starting any that is not running."""
        readers = self._readers.setdefault((group, consumer), _Readers())
        for index, shard in enumerate(self.shards):
            thread = readers.threads.get(index)
            if thread is None or not thread.is_alive():
                def read(s: RedisStreamsQueue = shard) -> list[RawEntry]:
                    return s.read_new(group, consumer, count, self.max_block_ms)

                thread = ShardReader(index, read, readers.handoff, f"shard-reader-{index}-{consumer}")
                readers.threads[index] = thread
                thread.start()
        return readers

    @staticmethod
    def _tagged(shard: int, entry: RawEntry) -> RawEntry:
        return dataclasses.replace(entry, id=f"{shard}/{entry.id}", token=(shard, entry.id))

    @staticmethod
    def _untagged(delivery: Delivery) -> tuple[int, Delivery]:
        shard, entry_id = delivery.raw.token
        raw = dataclasses.replace(delivery.raw, id=entry_id, token=entry_id)
        return shard, dataclasses.replace(delivery, id=entry_id, raw=raw)

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """XACK per shard and group."""
        by_shard: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            shard, plain = self._untagged(delivery)
            by_shard.setdefault(shard, []).append(plain)
        for shard, plain_deliveries in by_shard.items():
            self.shards[shard].ack(plain_deliveries)

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        shard, plain = self._untagged(delivery)
        self.shards[shard].nack(plain, delay_s)

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        shard, entry_id = entry.token
        self.shards[shard]._dead_letter(group, dataclasses.replace(entry, id=entry_id, token=entry_id), reason,
                                        error)

    # -- inspection -------------------------------------------------------------------------------------
    def shard_stats(self, group: str) -> list[QueueStats]:
        """:meth:`stats` of every shard, in shard order."""
        return [shard.stats(group) for shard in self.shards]

    def stats(self, group: str) -> QueueStats:
        """The shards' stats summed (the oldest pending entry: the oldest of all)."""
        each = self.shard_stats(group)
        return QueueStats(sum(s.depth for s in each), sum(s.lag for s in each), sum(s.pending for s in each),
                          max(s.oldest_pending_ms for s in each), sum(s.dead_letters for s in each))

    # -- the keys themselves ------------------------------------------------------------------------------
    def key_names(self) -> list[str]:
        """Every shard's stream and dead-letter stream."""
        return [key for shard in self.shards for key in shard.key_names()]

    def existing_keys(self) -> set[str]:
        """Which of :meth:`key_names` exist."""
        return set().union(*(shard.existing_keys() for shard in self.shards))

    def delete_keys(self) -> int:
        """DEL every shard's keys."""
        return sum(shard.delete_keys() for shard in self.shards)

    def used_memory_bytes(self) -> int:
        """``used_memory`` of the server, or of every master summed."""
        return self.shards[0].used_memory_bytes()

    # -- dead letters -----------------------------------------------------------------------------------
    @property
    def dead_letter_name(self) -> str:
        """``<stream>:{<tag>}:dlq`` of every shard."""
        return f"{self.settings.stream}:{{<tag>}}:dlq ({len(self.shards)} shard(s))"

    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Every shard's dead letters merged by id (milliseconds, sequence, then shard), ``<shard>/<id>``."""
        start: tuple[int, int, int] | None = None
        if after:
            found = split_id(after)
            if found is None:
                raise ValueError(f"after: {after!r} is not an id of this queue (<shard>/<entry id>)")
            start = (*parse_id(found[1]), found[0])
        merged: list[tuple[tuple[int, int, int], DeadLetter]] = []
        for index, shard in enumerate(self.shards):
            for letter in shard.dead_letters(count + 1, None if start is None else self._after(start, index)):
                key = (*parse_id(letter.id), index)
                if start is None or key > start:
                    merged.append((key, dataclasses.replace(letter, id=f"{index}/{letter.id}",
                                                           original_id=f"{index}/{letter.original_id}")))
        merged.sort(key=lambda item: item[0])
        return [letter for _, letter in merged[:count]]

    @staticmethod
    def _after(start: tuple[int, int, int], shard: int) -> str | None:
        """Where to start listing ``shard``: just before ``start``'s id, so that equal ids of later shards come."""
        ms, seq, _ = start
        if seq:
            return f"{ms}-{seq - 1}"
        return f"{ms - 1}-{2**64 - 1}" if ms else None

    def _by_shard(self, ids: Iterable[str]) -> dict[int, list[str]]:
        wanted: dict[int, list[str]] = {}
        for tagged in ids:
            found = split_id(tagged)
            if found is not None and found[0] < len(self.shards):
                wanted.setdefault(found[0], []).append(found[1])
        return wanted

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """Each dead letter back to its own shard's stream (its camera's), once."""
        wanted = self._by_shard(ids).items()
        return sum(self.shards[shard].replay_dead_letters(entry_ids) for shard, entry_ids in wanted)

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """XDEL the given dead letters, or every shard's dead-letter stream."""
        if ids is None:
            return sum(shard.purge_dead_letters() for shard in self.shards)
        return sum(self.shards[shard].purge_dead_letters(list(dict.fromkeys(entry_ids)))
                   for shard, entry_ids in self._by_shard(ids).items())

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the readers, give back what they read and nobody took, close the client."""
        for (group, consumer), readers in self._readers.items():
            for index, batch in readers.handoff.close():
                with contextlib.suppress(Exception):  # best effort: a crash would leave them pending too
                    self.shards[index].give_back(group, consumer, [entry.id for entry in batch])
        self._readers.clear()
        for shard in self.shards:
            shard.close()  # theirs is the shared client: closed once, here
        self.client.close()

"""The load of the cluster fault tests (issue 16): four cameras at 1000 frames/s in total through the real
:class:`~frame_buffer.flow.Producer` (breaker, spool) into a :class:`ShardedStreamsQueue` on a six- or
nine-node Redis Cluster of the test's own, consumed by :class:`~tests.faults.helpers.ConsumerProcess`
workers in their own processes; and the counts every fault test prints.

The durability setting under test is the one docs/scaling.md advises: ``FRAME_BUFFER_REDIS_REPLICA_ACKS=1``
(``WAIT 1`` after each shard's ``EXEC``) with ``min-replicas-to-write 1`` on the servers. "Lost" is a frame
``submit`` accepted that no consumer ever handled; nothing here waits on a sleep (the source's pacing is
the source's rate, not synchronisation).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frame_buffer.codec import EncodedFrame
from frame_buffer.flow import CircuitBreaker, ExponentialBackoff, Producer
from frame_buffer.frame import Frame
from frame_buffer.queue import DeadLetter, FrameQueue, QueueSettings
from frame_buffer.queue.redis_streams import ReplicaShortfall, ShardedStreamsQueue
from frame_buffer.queue.redis_streams.shards import ShardLayout, shard_of
from tests.cluster_servers import RedisClusterServers
from tests.faults.helpers import ConsumerProcess, all_dead_letters
from tests.frames import pattern
from tests.servers import wait_until

STREAM, GROUP, SHARDS = "frame_queue", "g", 16
LAYOUT = ShardLayout(STREAM, SHARDS, cluster=True)
#: Every deadline of these tests: generous, a loaded 2-core machine is slow; no assert is about time.
DEADLINE_S = 120.0
#: Error codes a publish failure is sorted by in the printed counts.
_CODES = re.compile(r"\b(NOREPLICAS|CLUSTERDOWN|MOVED|ASK|TRYAGAIN|READONLY|MASTERDOWN|LOADING)\b")


def start_cluster(workdir: Path, replicas_per_master: int = 1, min_replicas: int = 1) -> RedisClusterServers:
    """A cluster of the test's own whose masters refuse writes without ``min_replicas`` live replicas
    (``min-replicas-max-lag`` 2 s: a replica silent for longer no longer counts)."""
    servers = RedisClusterServers(workdir, replicas_per_master=replicas_per_master)
    for node in servers.nodes:  # command-line options: a node restarted in place keeps them
        node.extra = (*node.extra, "--min-replicas-to-write", str(min_replicas), "--min-replicas-max-lag", "2")
    return servers.start()


def cameras(count: int = 4) -> list[str]:
    """``count`` camera names on distinct shards, the first on shard 0 (whose slot is the lowest: resharding)."""
    chosen: list[str] = []
    n = 0
    while len(chosen) < count:
        name, n = f"cam{n}", n + 1
        shard = shard_of(name, SHARDS)
        if (shard == 0) == (not chosen) and shard not in {shard_of(c, SHARDS) for c in chosen}:
            chosen.append(name)
    return chosen


def slot_of(camera: str) -> int:
    """The hash slot of ``camera``'s shard."""
    return LAYOUT.slot(LAYOUT.shard_of(camera))


def failure_kind(exc: BaseException) -> str:
    """What a failed publish (or queue opening) met, for the printed counts."""
    if isinstance(exc, ReplicaShortfall):
        return "WAIT_shortfall"
    found = _CODES.search(str(exc))
    return found.group(1) if found else type(exc.__cause__ or exc).__name__


class _RecordingQueue(ShardedStreamsQueue):
    """The backend as it is, counting what each failed publish met (instrumentation, not a stand-in)."""

    errors: Counter[str]

    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        try:
            return super().publish_encoded(entries)
        except Exception as exc:
            self.errors[failure_kind(exc)] += 1
            raise


def opener(seeds: str, errors: Counter[str], replica_acks: int = 1) -> Callable[[], FrameQueue]:
    """The producer's queue factory, as the service makes it in cluster mode (16 shards, ``WAIT``)."""
    settings = QueueSettings(stream=STREAM, groups=(GROUP,))

    def open_queue() -> FrameQueue:
        try:
            queue = _RecordingQueue(seeds, settings, shards=SHARDS, cluster=True, replica_acks=replica_acks,
                                    replica_timeout_ms=500, max_block_ms=1000, block_margin_s=2.0)
        except Exception as exc:
            errors[f"open:{failure_kind(exc)}"] += 1
            raise
        queue.errors = errors
        return queue

    return open_queue


class Cameras(threading.Thread):
    """The source: ``names`` round robin at ``rate`` frames/s in total, each ``submit`` into the producer."""

    def __init__(self, producer: Producer, names: list[str], rate: float = 1000.0) -> None:
        super().__init__(name="cameras", daemon=True)
        self.producer, self.names, self.rate = producer, names, rate
        self.submitted = 0
        self.failures: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop_event.is_set():
                i = self.submitted
                camera, seq = self.names[i % len(self.names)], i // len(self.names)
                if not self.producer.submit(Frame(camera, seq, pattern(seq))):
                    raise AssertionError(f"frame {camera}/{seq} refused: no drop policy is in play")
                self.submitted = i + 1
                if self.submitted % 20 == 0 and (ahead := started + self.submitted / self.rate - time.monotonic()) > 0:
                    self._stop_event.wait(ahead)  # the cameras' rate, not synchronisation
        except BaseException as exc:
            self.failures.append(exc)

    def halt(self) -> None:
        self._stop_event.set()
        self.join(DEADLINE_S)

    def keys(self) -> set[tuple[str, int]]:
        """Every (camera, seq) submitted so far: what must be consumed."""
        return {(self.names[i % len(self.names)], i // len(self.names)) for i in range(self.submitted)}


class LoadRun:
    """A producer, its cameras and consumer processes on ``cluster``; :meth:`finish` counts what happened."""

    def __init__(self, cluster: RedisClusterServers, workdir: Path, *, consumers: Sequence[str] = ("c1",),
                 consumer_args: Sequence[str] = (), hang: dict[str, int] | None = None,
                 replica_acks: int = 1) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.errors: Counter[str] = Counter()
        self.names = cameras()
        hang = hang or {}
        self.consumers = {name: ConsumerProcess(workdir, cluster.seed_urls, name, "--mode", "cluster", "--shards",
                                                str(SHARDS), "--batch", "64", *consumer_args,
                                                *(("--hang-after", str(hang[name])) if name in hang else ()))
                          for name in consumers}
        self.producer = Producer(opener(cluster.seed_urls, self.errors, replica_acks), batch=32,
                                 budget_bytes=64 * 2**20, block_timeout_s=DEADLINE_S,
                                 breaker=CircuitBreaker("publish", failure_threshold=2,
                                                        cooldown=ExponentialBackoff(0.05, 0.5)))
        self.source = Cameras(self.producer, self.names)
        self.source.start()

    def delivered(self) -> list[tuple[str, int]]:
        """Every (camera, seq) any consumer handled, duplicates included."""
        return [key for consumer in self.consumers.values() for key in consumer.delivered()]

    def deliveries(self) -> list[tuple[str, int, int]]:
        """Every (camera, seq, attempts) any consumer handled, consumer by consumer."""
        return [entry for consumer in self.consumers.values() for entry in consumer.deliveries()]

    def wait_consumed(self, count: int, what: str) -> None:
        wait_until(lambda: len(set(self.delivered())) >= count, DEADLINE_S, what)

    def wait_published_more(self, frames: int, what: str) -> None:
        """Wait until ``frames`` more frames were published, and the spool is empty again."""
        start = self.producer.summary()["published"]
        wait_until(lambda: (s := self.producer.summary())["published"] >= start + frames and s["spool_frames"] == 0,
                   DEADLINE_S, what)

    def pending_of(self, consumer: str) -> dict[int, int]:
        """Entries pending under ``consumer`` per shard (shards with none left out)."""
        client = self.cluster.client()  # seeded with every node: any of them may be the one down
        try:
            counts = {shard: len(client.xpending_range(stream, GROUP, "-", "+", 10_000, consumername=consumer))
                      for shard, (stream, _dlq) in enumerate(LAYOUT.shard_keys())}
        finally:
            client.close()
        return {shard: count for shard, count in counts.items() if count}

    def dead_letters(self) -> list[DeadLetter]:
        queue = ShardedStreamsQueue(self.cluster.seed_urls, QueueSettings(stream=STREAM), shards=SHARDS, cluster=True)
        try:
            return all_dead_letters(queue)
        finally:
            queue.close()

    def finish(self, test: str, killed_consumers: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
        """Stop the cameras, get every frame published and consumed, stop the consumers; print and return
        published / consumed / lost / duplicates / redelivered and what the producer went through."""
        self.source.halt()
        assert not self.source.failures, self.source.failures
        assert self.producer.flush(DEADLINE_S), "the producer published everything it accepted"
        expected = self.source.keys()
        wait_until(lambda: set(self.delivered()) >= expected, DEADLINE_S, "every accepted frame consumed")
        self.producer.close()
        summaries = {name: consumer.stop() for name, consumer in self.consumers.items()
                     if name not in killed_consumers}
        delivered = self.delivered()
        producer = self.producer.summary()
        counts = {
            "submitted": self.source.submitted, "published": producer["published"],
            "consumed": len(set(delivered) & expected), "lost": len(expected - set(delivered)),
            "duplicates": len(delivered) - len(set(delivered)),
            "redelivered": sum(summary.get("redelivered", 0) for summary in summaries.values()),
            "dropped": sum(producer["dropped"].values()), "dead_lettered": len(self.dead_letters()),
            "spooled": producer["spooled"], "replayed": producer["replayed"],
            "publish_failures": producer["publish_failures"], "failures_by_kind": dict(self.errors),
            "breaker_opened": producer["breaker_transitions"]["open"], **extra,
        }
        print(f"\n[{test}] " + " ".join(f"{key}={value}" for key, value in counts.items()))
        return counts


def in_order_apart_from_redeliveries(deliveries: list[tuple[str, int, int]]) -> bool:
    """Per camera, first deliveries (attempts 1) come in sequence order, frames seen before excepted: a claim
    after a crash or a failover brings entries back out of order (attempts > 1), and after a failover the
    promoted replica may deliver again, as new, entries whose group state had not reached it (duplicates)."""
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    for camera, seq, attempts in deliveries:
        if (camera, seq) in seen or attempts > 1:
            seen.add((camera, seq))
            continue
        seen.add((camera, seq))
        if seq < last.get(camera, -1):
            return False
        last[camera] = seq
    return True

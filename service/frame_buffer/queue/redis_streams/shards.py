"""Shard streams (issue 16, docs/scaling.md): which key each shard's stream and dead letters live in, and
which shard a camera's frames go to.

In Redis Cluster a key lives in one of 16384 hash slots, and a command (or MULTI, or Lua script) that touches
keys of two slots is refused (``CROSSSLOT``). Every key of a shard carries the same hash tag (the text
between the first ``{`` and ``}``), so a shard's stream and its dead-letter stream share one slot, and moving
a frame to the dead letters stays one MULTI. The tags are chosen so that the shards' slots are spread evenly
over the slot space: a master serving a contiguous third of the slots (what ``redis-cli --cluster create``
gives three masters) holds a third of the shards.

With one shard and no cluster the keys are exactly the keys of before (``<stream>`` and ``<stream>:dlq``), so
an existing deployment keeps its data.

A camera's shard is a CRC-32 of its name: the same in every process, host and Python version (Python's
``hash`` of a string is salted per process), so every frame of a camera goes to one shard, in order.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: Most shard streams a queue may have (``FRAME_BUFFER_SHARDS``): a shard's window of slots stays 16 wide.
MAX_SHARDS = 1024

#: Fewest slots a shard's tag may hash into: with many shards, their even shares are narrower than this.
MIN_WINDOW = 256

__all__ = ["MAX_SHARDS", "MIN_WINDOW", "ShardLayout", "shard_of", "shard_tag", "slot_of_tag", "window"]


def shard_of(camera: str, shards: int) -> int:
    """The shard (0 to ``shards`` - 1) of every frame of ``camera``: stable across processes and versions."""
    return zlib.crc32(camera.encode("utf-8", "surrogatepass")) % shards


def slot_of_tag(tag: str) -> int:
    """The hash slot of every key tagged ``{tag}``."""
    return int(key_slot(tag.encode()))


@functools.lru_cache(maxsize=4 * MAX_SHARDS)
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of ``shard``: ``"<shard>"`` if its slot is in the shard's window of the slot space, else
    the first ``"<shard>.<n>"`` whose slot is.

    The window is the shard's even share, ``[shard, shard + 1) * 16384 / shards``, widened to
    :data:`MIN_WINDOW` slots when it is narrower (more than 64 shards) so that the search stays short: about
    16384 / width tries per shard. Even windows spread the shards over the masters whatever their number, as
    long as each serves a contiguous range of slots, as ``redis-cli --cluster create`` assigns them: three
    masters each hold at least 4 of 16 shards (every window lies whole in one third but one per boundary).
    The search is deterministic, so every process computes the same tags.
    """
    if not 0 <= shard < shards <= MAX_SHARDS:
        raise ValueError(f"shard {shard} of {shards}: needs 0 <= shard < shards <= {MAX_SHARDS}")
    low, high = window(shard, shards)
    candidate, attempt = str(shard), 0
    while not low <= slot_of_tag(candidate) < high:
        attempt += 1
        candidate = f"{shard}.{attempt}"
    return candidate


def window(shard: int, shards: int) -> tuple[int, int]:
    """The slots ``[low, high)`` the tag of ``shard`` must hash into (see :func:`shard_tag`)."""
    low = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    width = max((shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards - low, MIN_WINDOW)
    low = min(low, REDIS_CLUSTER_HASH_SLOTS - width)
    return low, low + width


@dataclass(frozen=True)
class ShardLayout:
    """The keys of a stream's shards.

    Args:
        stream: the stream name (``FRAME_BUFFER_STREAM``).
        shards: how many shard streams (``FRAME_BUFFER_SHARDS``).
        cluster: Redis Cluster: keys are hash-tagged even with one shard, so that the stream and its dead
            letters share a slot.
    """

    stream: str
    shards: int = 1
    cluster: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards: must be 1 to {MAX_SHARDS}, got {self.shards}")
        if self.tagged and ("{" in self.stream or "}" in self.stream):
            # Redis hashes the first {...} of a key: a brace in the stream's name would take the tag's place.
            raise ValueError(f"stream: must not contain {{ or }} with shard streams, got {self.stream!r}")

    @property
    def tagged(self) -> bool:
        """Whether the keys carry hash tags: not for one shard on one server (the keys of before)."""
        return self.cluster or self.shards > 1

    def stream_key(self, shard: int) -> str:
        """The stream of ``shard``: ``<stream>:{<tag>}``, or ``<stream>`` itself when untagged."""
        return f"{self.stream}:{{{shard_tag(shard, self.shards)}}}" if self.tagged else self._untagged(shard)

    def dead_letter_key(self, shard: int) -> str:
        """The dead-letter stream of ``shard``, in the slot of its stream: ``<stream>:{<tag>}:dlq``."""
        return f"{self.stream_key(shard)}:dlq"

    def shard_keys(self) -> list[tuple[str, str]]:
        """(stream, dead-letter stream) of every shard, in shard order."""
        return [(self.stream_key(shard), self.dead_letter_key(shard)) for shard in range(self.shards)]

    def shard_of(self, camera: str) -> int:
        """The shard of ``camera``'s frames."""
        return shard_of(camera, self.shards)

    def slot(self, shard: int) -> int:
        """The hash slot of every key of ``shard`` (with the keys of before, the stream's own slot)."""
        return int(key_slot(self.stream_key(shard).encode()))

    def _untagged(self, shard: int) -> str:
        if shard != 0:
            raise ValueError(f"shard {shard} of 1: the only shard is 0")
        return self.stream

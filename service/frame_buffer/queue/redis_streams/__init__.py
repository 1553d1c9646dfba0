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

The modules, one concept each: :mod:`.queue` (the :class:`RedisStreamsQueue`), :mod:`.keys` (the stream's two
keys and the translation of redis-py's errors), :mod:`.entries` (entry ids and fields), :mod:`.progress` (the
slowest group's backlog, the oldest entry still needed), :mod:`.claims` (recovering pending entries) and
:mod:`.dead_letters` (the dead-letter stream); for several shard streams or a Redis Cluster (docs/scaling.md)
:mod:`.shards` (the shard keys and which camera goes where), :mod:`.clients` (the clients and which connection
a publish runs on), :mod:`.readers` (one blocked reader per shard) and :mod:`.sharded` (the
:class:`ShardedStreamsQueue` over them).
"""

from frame_buffer.checks import masked_url
from frame_buffer.queue.redis_streams.clients import SOCKET_READ_SIZE
from frame_buffer.queue.redis_streams.queue import RedisStreamsQueue, ReplicaShortfall
from frame_buffer.queue.redis_streams.sharded import ShardedStreamsQueue

#: Either Redis queue: both have ``key_names``, ``existing_keys``, ``delete_keys`` and ``used_memory_bytes``.
RedisQueue = RedisStreamsQueue | ShardedStreamsQueue

__all__ = ["SOCKET_READ_SIZE", "RedisQueue", "RedisStreamsQueue", "ReplicaShortfall", "ShardedStreamsQueue",
           "masked_url"]

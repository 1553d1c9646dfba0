"""The shard readers' hand-off (queue/redis_streams/readers.py), thread against thread, without a server."""

from __future__ import annotations

from frame_buffer.queue.base import RawEntry
from frame_buffer.queue.redis_streams.readers import Handoff, ShardReader


def test_a_batch_read_after_the_queue_closed_is_given_back() -> None:
    """Closing the queue cuts the readers' connections, and redis-py's cluster client retries a read cut that
    way on a new connection: a batch can arrive after the hand-off closed. It is pending under the consumer's
    name; dropped, it would wait out claim_min_idle_ms (the likely cause of 32 frames delivered last, as
    redeliveries, in one run of the cluster replica test). The reader gives it back, for the next claim sweep."""
    handoff = Handoff()
    entry = RawEntry("1-1", b"h", b"p", 1)
    given_back: list[list[str]] = []

    def read() -> list[RawEntry]:
        handoff.close()  # the queue closed while this read was on the wire
        return [entry]

    reader = ShardReader(3, read, handoff, "shard-reader-3-c", given_back.append)
    reader.start()
    assert handoff.take(30) is None  # the consumer's demand lets the reader read; the close ends the wait
    reader.join(30)
    assert not reader.is_alive() and given_back == [["1-1"]]


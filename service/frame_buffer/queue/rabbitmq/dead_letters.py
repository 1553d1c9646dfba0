"""The dead-letter queue ``S:dlq``: writing letters, and listing, replaying and purging them.

``S:dlq`` is a classic durable queue, read by ``basic.get`` without ack and given back (classic queues put
requeued messages back in place, so the listing order is stable). The broker dead-letters there too, with
its own headers (the ``x-delivery-limit`` backstop of quorum queues), so reading a letter is total.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from frame_buffer.queue.base import DeadLetter, QueueSettings, RawEntry
from frame_buffer.queue.rabbitmq.connection import Link, Tuning
from frame_buffer.queue.rabbitmq.messages import ATTEMPTS, HEADER, MessageIds, count, is_int, persistent
from frame_buffer.queue.rabbitmq.publisher import Publisher
from frame_buffer.queue.rabbitmq.topology import Topology


@dataclass(eq=False)
class _Scan:
    """A reading of the dead-letter queue: its channel, the messages taken and not acked, and how many the
    queue still held after the last one taken."""

    channel: Any
    held: int = 0
    remaining: int = 0

    def ack(self, method: Any) -> None:
        self.channel.basic_ack(method.delivery_tag)
        self.held -= 1


class DeadLetters:
    """The dead-letter queue of one stream."""

    def __init__(self, settings: QueueSettings, link: Link, tuning: Tuning, *, topology: Topology,
                 publisher: Publisher, ids: MessageIds) -> None:
        self._settings = settings
        self._link = link
        self._tuning = tuning
        self._topology = topology
        self._publisher = publisher
        self._ids = ids

    def write(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """Publish ``entry`` to ``S:dlq`` with why, confirmed. Runs inside :meth:`Link.call`."""
        headers: dict[str, Any] = {
            "x-fb-reason": reason, "x-fb-error": error[:1000], ATTEMPTS: entry.attempts,
            "x-fb-original-id": entry.id, "x-fb-group": group, "x-fb-at-ms": int(time.time() * 1000),
        }
        if entry.header is not None:
            headers[HEADER] = entry.header
        props = persistent(self._ids.new(), headers)
        self._publisher.publish_all([("", self._topology.dlq, entry.payload or b"", props)],
                                    time.monotonic() + self._settings.publish_timeout_s)

    @contextmanager
    def _scan(self) -> Iterator[_Scan]:
        """A reading of the dead-letter queue (:meth:`_each`); when the caller is done (at the end of the queue
        or earlier), what it took and did not ack goes back in place before this returns.

        Closing the channel would requeue them too, but the broker does that asynchronously, and so it does a
        nack: a passive declare just after (``stats()``) could count the queue without them, which the
        conformance suite saw once on a loaded machine, and which 300 letters of 1 MiB show every time. So after
        the nack this waits, up to ``confirm_timeout_s``, until the queue holds what it held when the reading
        stopped plus what the reading gives back (less, if someone else takes dead letters meanwhile: then it
        returns at the deadline).
        """
        with self._link.temp_channel() as channel:
            scan = _Scan(channel)
            yield scan
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            expected = scan.remaining + scan.held
            deadline = time.monotonic() + self._tuning.confirm_timeout_s
            while (channel.queue_declare(self._topology.dlq, passive=True).method.message_count < expected
                   and time.monotonic() < deadline):
                self._link.pump(self._tuning.poll_s)

    def _each(self, scan: _Scan) -> Iterator[tuple[Any, DeadLetter]]:
        """The dead-letter queue's messages in order, taken one at a time (``basic.get``) without ack."""
        while True:
            method, props, body = scan.channel.basic_get(self._topology.dlq)
            if method is None:
                scan.remaining = 0
                return
            scan.held += 1
            scan.remaining = method.message_count
            yield method, self._letter(props, body)

    def _letter(self, props: Any, body: bytes) -> DeadLetter:
        """A dead letter from its message; total, since the broker dead-letters foreign messages with their
        own headers (the delivery-limit backstop), whatever those hold."""
        headers = props.headers if isinstance(props.headers, dict) else {}

        def text(key: str, default: str = "") -> str:
            value = headers.get(key, default)
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

        # Dead-lettered by the broker itself (the delivery-limit backstop): x-first-death-* and x-death say why
        # and when, not how often it was delivered (attempts 0).
        deaths = headers.get("x-death")
        death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        when = death.get("time")
        stamp = headers.get("x-fb-at-ms")
        at_ms = int(stamp) if is_int(stamp) else int(when.timestamp() * 1000) if isinstance(when, datetime) else 0
        message_id = props.message_id if isinstance(props.message_id, str) else ""
        header = headers.get(HEADER)
        return DeadLetter(
            id=message_id, original_id=text("x-fb-original-id", message_id),
            group=text("x-fb-group", text("x-first-death-queue").removeprefix(f"{self._topology.exchange}.")),
            reason=text("x-fb-reason", text("x-first-death-reason")), error=text("x-fb-error"),
            attempts=count(headers.get(ATTEMPTS)), dead_lettered_at_ms=at_ms,
            header=header.encode() if isinstance(header, str) else header if isinstance(header, bytes) else None,
            payload=body,
        )

    def listing(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """List the dead-letter queue in order (``basic.get`` without ack, given back before returning).

        Holds at most ``count`` letters: it stops reading once it has them after ``after``, and while it looks
        for ``after`` it keeps only the first ``count`` letters whose id sorts after it (what is returned when
        ``after`` is no longer in the queue). Every message read before it stops goes through this process,
        one at a time.
        """

        def read() -> list[DeadLetter]:
            kept: list[DeadLetter] = []
            found = after is None
            with self._scan() as scan:
                for _method, letter in self._each(scan):
                    if not found and letter.id == after:
                        found, kept = True, []  # from here on: the ones after it, in queue order
                        continue
                    if found or letter.id > str(after):
                        if len(kept) < count:
                            kept.append(letter)
                        if found and len(kept) >= count:
                            break
            return kept

        return self._link.call(read)

    def replay(self, ids: Iterable[str]) -> int:
        """Publish each dead letter to its group's queue (confirmed), then ack it out of the dead-letter queue.

        Unlike Redis, where a replayed entry reaches every group again, only the group that gave up sees it.
        Ids that are not a dead letter's count as not found.
        """
        wanted = _wanted(ids)

        def publish(letter: DeadLetter) -> None:
            props = persistent(self._ids.new(), {HEADER: letter.header})
            self._publisher.publish_all([("", self._topology.group_queue(letter.group), letter.payload, props)],
                                        time.monotonic() + self._settings.publish_timeout_s)

        return self._link.call(lambda: self._take(wanted, publish)) if wanted else 0

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """Ack the given dead letters out of their queue, or purge it whole with ``None``; ids that are not a
        dead letter's count as not found."""
        if ids is None:

            def purge_all() -> int:
                self._link.connection()
                return int(self._topology.admin.queue_purge(self._topology.dlq).method.message_count)

            return self._link.call(purge_all)
        wanted = _wanted(ids)
        return self._link.call(lambda: self._take(wanted, lambda _letter: None)) if wanted else 0

    def _take(self, wanted: set[str], act: Callable[[DeadLetter], None]) -> int:
        """Scan the dead-letter queue once; each letter whose id is ``wanted``: ``act`` on it, then ack it out
        (ids are removed from ``wanted`` as found, so a retry after a reconnect does not take one twice)."""
        taken = 0
        with self._scan() as scan:
            for method, letter in self._each(scan):
                if letter.id not in wanted:
                    continue
                wanted.discard(letter.id)
                act(letter)
                scan.ack(method)
                taken += 1
                if not wanted:
                    break  # every id found: the rest of the queue need not be read
        return taken


def _wanted(ids: Iterable[str]) -> set[str]:
    """The ids asked for that could be a dead letter's (non-empty strings); others count as not found."""
    return {entry_id for entry_id in ids if isinstance(entry_id, str) and entry_id}

"""Where the consumer groups are: the backlog of the slowest (what backpressure bounds) and the oldest entry
some group still needs (what trimming keeps).

Trimming is by ``MINID`` at that entry, never by ``MAXLEN``: nothing unacknowledged is trimmed away.
"""

from __future__ import annotations

from frame_buffer.queue.redis_streams.entries import MAX_ID_PART, id_to_str, parse_id
from frame_buffer.queue.redis_streams.keys import StreamKeys

#: Publish trims at most this often ...
TRIM_EVERY_S = 0.5
#: ... or once this many bytes were published since the last trim. Redis frees trimmed entries inside XTRIM,
#: about 0.1 ms per MB here, and serves nobody meanwhile: 0.5 s of 100 KB frames at 1000/s was a 5 to 7 ms
#: stall twice a second, the largest part of p99. 4 MB per trim keeps each stall near 0.4 ms.
TRIM_EVERY_BYTES = 4 * 1024 * 1024


def slowest_backlog(keys: StreamKeys) -> int:
    """The largest lag + pending over all groups; the stream length when there is no group yet."""
    groups = keys.groups()
    if not groups:
        return int(keys.client.xlen(keys.stream))
    length = None
    worst = 0
    for group in groups:
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell after deletions: count what is past last-delivered.
            if length is None:
                length = int(keys.client.xlen(keys.stream))
            lag = length
        worst = max(worst, int(lag) + int(group["pending"]))
    return worst


def oldest_needed_id(keys: StreamKeys) -> str | None:
    """The oldest entry id some group still needs (its oldest pending entry, or the one after its
    last-delivered id); None when there is no group (frames are kept for the first group to come)."""
    groups = keys.groups()
    if not groups:
        return None  # no stream, or frames are kept for the first group to come
    needed: list[tuple[int, int]] = []
    # Asked even when XINFO said nothing is pending: entries may have been acked or delivered since.
    pipe = keys.client.pipeline(transaction=False)
    for group in groups:
        ms, seq = parse_id(id_to_str(group["last-delivered-id"]))
        # The entry after last-delivered is the first one the group has not seen (none after the largest id).
        needed.append((ms, seq + 1) if seq < MAX_ID_PART else (ms + 1, 0) if ms < MAX_ID_PART else (ms, seq))
        pipe.xpending(keys.stream, group["name"])
    for summary in pipe.execute():
        if summary["min"] is not None:
            needed.append(parse_id(id_to_str(summary["min"])))
    ms, seq = min(needed)
    return f"{ms}-{seq}"

"""Stream entries: their ids as Redis writes them, and their fields (``h`` the codec header, ``p`` the payload,
or ``r`` a reference to it in a shared-memory payload store)."""

from __future__ import annotations

import re

from frame_buffer.queue.base import RawEntry

HEADER, PAYLOAD, REF = b"h", b"p", b"r"
#: An entry id as Redis writes it: milliseconds and sequence, each an unsigned 64-bit integer.
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_ID_PART = 2**64 - 1


def valid_id(entry_id: object) -> bool:
    """Whether ``entry_id`` (from outside: the CLI, an operator) is an entry id; Redis refuses other ones."""
    match = _ENTRY_ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    return match is not None and max(int(match[1]), int(match[2])) <= MAX_ID_PART


def id_to_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def raw_entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None, attempts: int) -> RawEntry:
    """The entry as fetched; its token is its id (what XACK takes)."""
    fields = fields or {}
    sid = id_to_str(entry_id)
    return RawEntry(sid, fields.get(HEADER), fields.get(PAYLOAD), attempts, sid, fields.get(REF))

"""Raw Redis access for the hostile-input tests: entries written with plain XADD (not through frame_buffer), and
the dead-letter stream read back and checked entry by entry."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import redis

from tests.hostile.entries import HEADER, PAYLOAD, Entry


def write(client: redis.Redis, stream: str, entries: Iterable[Entry]) -> dict[str, Entry]:
    """XADD every entry in one pipeline; returns them by entry id."""
    entries = list(entries)
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, entry.fields)  # type: ignore[arg-type]
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    return dict(zip(ids, entries, strict=True))


class DeadLetters:
    """The dead-letter stream ``<stream>:dlq`` as read so far, by the id of the entry each letter came from."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client = client
        self.key = f"{stream}:dlq"
        self.last = "-"
        self.by_original: dict[str, list[dict[bytes, bytes]]] = defaultdict(list)

    def read(self) -> dict[str, list[dict[bytes, bytes]]]:
        """Read what arrived since the last call."""
        while True:
            start = "-" if self.last == "-" else f"({self.last}"
            batch = self.client.xrange(self.key, start, "+", count=1000)
            if not batch:
                return self.by_original
            for letter_id, fields in batch:
                self.by_original[fields[b"original_id"].decode()].append(fields)
                self.last = letter_id.decode()

    def reasons(self) -> Counter[str]:
        """How many letters carry each reason."""
        return Counter(letter[b"reason"].decode() for letters in self.read().values() for letter in letters)

    def holds(self, ids: Iterable[str]) -> bool:
        letters = self.read()
        return all(entry_id in letters for entry_id in ids)

    def check(self, written: dict[str, Entry]) -> None:
        """Every invalid entry is here once, with its reason, header and payload unchanged; no valid one is."""
        letters = self.read()
        for entry_id, entry in written.items():
            expected = entry.expected
            got = letters.get(entry_id, [])
            if expected is None:
                assert not got, f"valid entry {entry_id} ({entry.camera}) was dead-lettered: {got}"
                continue
            assert len(got) == 1, f"entry {entry_id} ({entry.camera}) dead-lettered {len(got)} times, not once"
            (letter,) = got
            assert letter[b"reason"].decode() == expected, (
                f"entry {entry_id} ({entry.camera}): reason {letter[b'reason'].decode()}, expected {expected}; "
                f"error {letter[b'error'].decode()!r}; fields {entry.fields!r:.300}"
            )
            for name in (HEADER, PAYLOAD):
                assert letter.get(name) == entry.fields.get(name), f"entry {entry_id}: field {name!r} changed"

"""The shared-memory payload store on its own: slots, generations, the release rule, lost segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frame_buffer.codec import PayloadRef
from frame_buffer.payload_store import PayloadLost, StoreError, StoreFull, StoreReader, StoreWriter
from frame_buffer.payload_store.layout import HEADER_BYTES, slot_bytes
from frame_buffer.payload_store.ring import Ring, Slot


def test_a_put_payload_is_read_back_as_a_read_only_view_of_the_same_memory(store_dir: Path) -> None:
    writer, reader = StoreWriter(store_dir, 1 << 20), StoreReader(store_dir)
    slot, ref = writer.put(b"abc" * 100)
    view = reader.view(ref)
    assert bytes(view) == b"abc" * 100 and view.readonly
    array = np.frombuffer(view, np.uint8)
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 1
    # Zero copy: the reader's view is the writer's memory (a write shows through; never done to a live slot).
    writer._map[slot.offset + HEADER_BYTES] = ord("z")
    assert array[0] == ord("z")
    writer.close()
    reader.close()


def test_a_reserved_slot_is_written_in_place_and_committed(store_dir: Path) -> None:
    writer, reader = StoreWriter(store_dir, 1 << 22), StoreReader(store_dir)
    reservation = writer.reserve(480 * 640 * 3)
    image = reservation.array((480, 640, 3), np.uint8)
    image[:] = 0
    image[10:20, :, 1] = 255  # a source renders straight into the slot
    assert writer.owns(memoryview(image).cast("B")) and not writer.owns(image.tobytes())
    ref = writer.commit(reservation)
    got = np.frombuffer(reader.view(ref), np.uint8).reshape(480, 640, 3)
    np.testing.assert_array_equal(got, image)
    assert ref == PayloadRef(writer.segment, 0, 480 * 640 * 3, 1)


def test_an_uncommitted_slot_is_refused(store_dir: Path) -> None:
    writer, reader = StoreWriter(store_dir, 1 << 20), StoreReader(store_dir)
    reservation = writer.reserve(100)
    reservation.view[:] = b"x" * 100
    would_be = PayloadRef(writer.segment, reservation.slot.offset, 100, reservation.slot.generation)
    with pytest.raises(PayloadLost, match="never committed"):
        reader.view(would_be)


def test_slots_are_released_only_before_the_oldest_id_still_needed(store_dir: Path) -> None:
    writer, reader = StoreWriter(store_dir, 1 << 20), StoreReader(store_dir)
    published = []
    for n in range(5):
        slot, ref = writer.put(bytes([n]) * 1000)
        writer.bind(slot, f"100-{n}")
        published.append(ref)
    unbound_slot, unbound = writer.put(b"in flight")  # committed, its XADD not answered yet
    assert writer.release_before("100-2") == 2  # entries 100-0 and 100-1: every group is done with them
    for ref in published[:2]:
        with pytest.raises(PayloadLost, match="generation 0"):
            reader.view(ref)
    assert [bytes(reader.view(ref))[:1] for ref in published[2:]] == [b"\x02", b"\x03", b"\x04"]
    assert writer.release_before("999-0") == 3  # stops at the slot without an entry id
    assert bytes(reader.view(unbound)) == b"in flight"
    writer.bind(unbound_slot, "1000-0")
    assert writer.release_before("1000-1") == 1
    assert (writer.live_slots, writer.used_bytes) == (0, 0)


def test_a_reused_slot_refuses_the_old_reference(store_dir: Path) -> None:
    writer, reader = StoreWriter(store_dir, slot_bytes(1000)), StoreReader(store_dir)
    slot, old = writer.put(b"a" * 1000)
    with pytest.raises(StoreFull):
        writer.put(b"b")
    writer.bind(slot, "1-0")
    writer.release_before("2-0")
    _slot, new = writer.put(b"b" * 1000)
    assert (new.offset, new.generation) == (old.offset, old.generation + 1)
    with pytest.raises(PayloadLost, match=f"holds generation {new.generation}, not {old.generation}"):
        reader.view(old)
    assert bytes(reader.view(new)) == b"b" * 1000


def test_an_aborted_publish_gives_its_room_back(store_dir: Path) -> None:
    writer = StoreWriter(store_dir, slot_bytes(1000))
    slot, ref = writer.put(b"a" * 1000)
    writer.abort(slot, 1000)
    assert writer.live_slots == 0
    with pytest.raises(PayloadLost):
        StoreReader(store_dir).view(ref)
    writer.put(b"b" * 1000)


def test_too_large_a_payload_is_an_error_not_backpressure(store_dir: Path) -> None:
    writer = StoreWriter(store_dir, 4096)
    with pytest.raises(StoreError, match="does not fit") as caught:
        writer.reserve(4096)
    assert not isinstance(caught.value, StoreFull)
    with pytest.raises(StoreError, match="at least 64"):
        StoreWriter(store_dir / "other", 10)


def test_a_second_writer_of_a_stream_is_refused(store_dir: Path) -> None:
    first = StoreWriter(store_dir, 4096)
    with pytest.raises(StoreError, match="another process writes it"):
        StoreWriter(store_dir, 4096)
    first.close()
    StoreWriter(store_dir, 4096).close(remove=True)


def test_deleted_segment_files_make_payload_lost_and_the_writer_starts_a_new_segment(store_dir: Path) -> None:
    writer = StoreWriter(store_dir, 1 << 16)
    slot, ref = writer.put(b"pixels")
    writer.bind(slot, "5-0")
    for path in store_dir.glob("seg-*"):
        path.unlink()  # what a reboot or `rm -rf /dev/shm/frame-buffer` does to the payloads
    with pytest.raises(PayloadLost, match="No such file"):
        StoreReader(store_dir).view(ref)
    _slot, after = writer.put(b"new pixels")
    assert after.segment != ref.segment and (store_dir / after.segment).exists()
    assert bytes(StoreReader(store_dir).view(after)) == b"new pixels"


def test_a_new_writer_keeps_the_old_segment_readable_until_its_entries_are_released(store_dir: Path) -> None:
    first = StoreWriter(store_dir, 1 << 16)
    slot, old = first.put(b"before the restart")
    first.bind(slot, "10-0")
    first.close()  # or SIGKILL: the kernel drops the lock either way
    second = StoreWriter(store_dir, 1 << 16)
    reader = StoreReader(store_dir)
    assert bytes(reader.view(old)) == b"before the restart"
    slot, _new = second.put(b"after")
    second.bind(slot, "20-0")
    second.release_before("19-0")  # not up to the new writer's first entry: the old one may still be needed
    assert (store_dir / old.segment).exists()
    second.release_before("20-0")
    assert not (store_dir / old.segment).exists()
    with pytest.raises(PayloadLost):
        StoreReader(store_dir).view(old)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"segment": "seg-0000000000000000"}, "No such file"),
        ({"offset": 1 << 30}, "ends past the segment"),
        ({"length": 1 << 20}, "ends past the segment"),
        ({"length": 5}, "not 1"),  # the header says another length
        ({"offset": 64}, "not 1"),  # inside the payload: no slot header there
    ],
)
def test_hostile_references_are_refused_before_anything_is_read(
    store_dir: Path, change: dict[str, object], message: str
) -> None:
    writer = StoreWriter(store_dir, 1 << 16)
    _slot, ref = writer.put(b"\xff" * 4096)
    fields = {"segment": ref.segment, "offset": ref.offset, "length": ref.length, "generation": ref.generation}
    with pytest.raises(PayloadLost, match=message):
        StoreReader(store_dir).view(PayloadRef(**(fields | change)))  # type: ignore[arg-type]


def test_a_reader_keeps_a_bounded_number_of_segments_mapped(store_dir: Path) -> None:
    reader = StoreReader(store_dir)
    refs = []
    for _ in range(6):
        writer = StoreWriter(store_dir, 4096)
        refs.append(writer.put(b"x")[1])
        writer.close()
    views = [reader.view(ref) for ref in refs]  # the views keep their mappings even once unmapped by the reader
    assert [bytes(v) for v in views] == [b"x"] * 6
    assert len(reader._maps) == 4
    reader.close()
    assert [bytes(v) for v in views] == [b"x"] * 6


# -- the ring, as a property: live slots never overlap and stay inside the segment ----------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "release", "abort"]), st.integers(1, 40)), max_size=80),
       st.integers(64, 2048))
def test_ring_slots_never_overlap(ops: list[tuple[str, int]], capacity: int) -> None:
    ring, next_id = Ring(capacity), 0
    for op, n in ops:
        if op == "add":
            size = n * 64
            offset = ring.fit(size)
            if offset is None:
                continue
            next_id += 1
            slot = Slot(offset, size, next_id)
            ring.add(slot)
            slot.entry_id = (next_id, 0)
        elif op == "release":
            ring.release_before((next_id - n + 1, 0))
        elif ring.live:
            ring.abort(ring.live[-1])
        spans = sorted((s.offset, s.offset + s.size) for s in ring.live)
        assert all(0 <= a < b <= capacity for a, b in spans)
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans
        assert ring.used == sum(s.size for s in ring.live)


def test_the_ring_wraps_into_the_room_its_tail_left() -> None:
    ring = Ring(640)
    for n in range(3):
        offset = ring.fit(192)
        assert offset is not None
        ring.add(Slot(offset, 192, n, entry_id=(n, 0)))
    assert [s.offset for s in ring.live] == [0, 192, 384] and ring.fit(192) is None
    ring.release_before((2, 0))  # the first two: 384 bytes free at the start, 64 at the end
    assert ring.fit(192) == 0
    ring.add(Slot(0, 192, 3, entry_id=(3, 0)))
    assert ring.fit(192) == 192  # wrapped: the gap up to the tail at 384
    ring.add(Slot(192, 192, 4))
    assert ring.fit(64) is None


def test_an_empty_segment_file_is_payload_lost(store_dir: Path) -> None:
    store_dir.mkdir(parents=True)
    (store_dir / "seg-00000000000000ff").touch()
    with pytest.raises(PayloadLost, match="is empty"):
        StoreReader(store_dir).view(PayloadRef("seg-00000000000000ff", 0, 1, 1))


def test_a_store_that_cannot_be_made_is_a_store_error(store_dir: Path) -> None:
    store_dir.parent.mkdir(parents=True)
    (store_dir.parent / "file").touch()
    with pytest.raises(StoreError, match="Not a directory"):
        StoreWriter(store_dir.parent / "file" / "stream", 4096)
    with pytest.raises(StoreError, match="No space left on device"):
        StoreWriter(store_dir, 1 << 62)  # more than the tmpfs: refused before anything is written
    assert not list(store_dir.glob("seg-*"))
    StoreWriter(store_dir, 4096).close()  # the failed start left no lock behind


def test_slots_of_a_segment_deleted_mid_batch_are_left_alone(store_dir: Path) -> None:
    writer = StoreWriter(store_dir, 1 << 16)
    old_slot, _ref = writer.put(b"a")
    reservation = writer.reserve(10)
    for path in store_dir.glob("seg-*"):
        path.unlink()
    new_slot, _ref = writer.put(b"b")
    writer.abort(old_slot, 1)
    writer.cancel(reservation)
    assert writer.live_slots == 1 and new_slot.segment == writer.segment

"""Payload references (docs/wire-format.md section 9): decoding a stream's ``r`` field is total, whatever bytes
it holds, and every reference a writer makes comes back equal."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frame_buffer.codec import MAX_REF_BYTES, SLOT_ALIGN, CodecError, PayloadRef, decode_ref, encode_ref
from tests.hostile.entries import values, wire_ints

MANY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

segments = st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda h: f"seg-{h}")
refs = st.builds(PayloadRef, segment=segments, offset=st.integers(0, 2**57 - 1).map(lambda n: n * SLOT_ALIGN),
                 length=st.integers(0, 2**63 - 1), generation=st.integers(1, 2**64 - 1))


@MANY
@given(refs)
def test_every_reference_round_trips(ref: PayloadRef) -> None:
    encoded = encode_ref(ref)
    assert len(encoded) <= MAX_REF_BYTES
    assert decode_ref(encoded) == ref
    assert decode_ref(memoryview(encoded)) == ref


@MANY
@given(st.binary(max_size=300) | st.none() | st.integers() | st.text(max_size=8))
def test_arbitrary_bytes_decode_or_raise_bad_reference(raw: Any) -> None:
    try:
        decode_ref(raw)
    except CodecError as exc:
        assert exc.reason == "bad_reference", exc
        assert not str(exc).endswith("()")


items = values | wire_ints | segments | st.text(max_size=40) | st.integers(-(2**64), 2**65)


@MANY
@given(st.lists(items, max_size=6) | st.dictionaries(st.text(max_size=4), items, max_size=4) | items)
def test_arbitrary_msgpack_values_decode_only_when_the_rules_allow(value: Any) -> None:
    try:
        packed = msgpack.packb(value)
    except (ValueError, TypeError, OverflowError):
        return
    try:
        ref = decode_ref(packed)
    except CodecError as exc:
        assert exc.reason == "bad_reference", exc
        return
    assert type(value) is list and len(value) == 4
    assert ref.segment.startswith("seg-") and len(ref.segment) == 20
    assert ref.offset % SLOT_ALIGN == 0 and 0 <= ref.offset < 2**63
    assert 0 <= ref.length < 2**63 and 0 < ref.generation < 2**64


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["../../etc/passwd", 0, 1, 1], "segment is '../../etc/passwd' (str)"),
        (["seg-0123456789ABCDEF", 0, 1, 1], "segment is 'seg-0123456789ABCDEF'"),
        (["seg-0123456789abcdef/", 0, 1, 1], "segment is"),
        (["seg-0123456789abcdef", 65, 1, 1], "offset is 65 (int), must be an int 0 <= offset < 2**63, a multiple"),
        (["seg-0123456789abcdef", -64, 1, 1], "offset is -64"),
        (["seg-0123456789abcdef", True, 1, 1], "offset is True (bool)"),
        (["seg-0123456789abcdef", 0, -1, 1], "length is -1"),
        (["seg-0123456789abcdef", 0, 1.0, 1], "length is 1.0 (float)"),
        (["seg-0123456789abcdef", 0, 1, 0], "generation is 0 (int), must be an int 0 < generation < 2**64"),
        (["seg-0123456789abcdef", 0, 1], "reference is ['seg-0123456789abcdef', 0, 1] (list), must be an array of 4"),
        ({"segment": "x"}, "reference is {'segment': 'x'} (dict)"),
    ],
)
def test_a_bad_reference_is_named(value: Any, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_ref(msgpack.packb(value))
    assert caught.value.reason == "bad_reference"
    assert message in str(caught.value)


def test_oversized_and_trailing_bytes_are_refused() -> None:
    good = encode_ref(PayloadRef("seg-0123456789abcdef", 0, 1, 1))
    with pytest.raises(CodecError, match="not valid msgpack"):
        decode_ref(good + b"\x00")
    with pytest.raises(CodecError, match=f"more than {MAX_REF_BYTES}"):
        decode_ref(b"\x00" * (MAX_REF_BYTES + 1))

"""Decoding is total: whatever a stream holds decodes to a frame or raises CodecError with the reason the wire
rules give it, nothing else; and encoding refuses every frame that would not decode. The codec alone, so fast
enough for many examples; tests/hostile/ runs the same entries through real consumers."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from frame_buffer.codec import CodecError, FrameCodec, FrameTooLarge
from frame_buffer.frame import Frame
from tests.hostile.entries import (
    HEADER,
    MUTATIONS,
    PAYLOAD,
    REASONS,
    UNKNOWN,
    Entry,
    Mutation,
    entries,
    meta_values,
    not_ints,
    reason_of,
    valid_drafts,
    values,
    wire_ints,
)

MANY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = FrameCodec()


def decode(fields: dict[bytes, bytes]) -> Frame:
    return CODEC.decode(fields.get(HEADER), fields.get(PAYLOAD))


@MANY
@given(entries("cam-1", 7))
def test_every_entry_decodes_or_gets_the_reason_the_rules_give_it(entry: Entry) -> None:
    try:
        frame = decode(entry.fields)
    except CodecError as exc:
        assert exc.reason in REASONS, exc
        assert not str(exc).endswith("()"), exc
        if entry.declared != UNKNOWN:
            assert exc.reason == entry.declared, f"{exc} (expected {entry.declared})"
        return
    assert entry.declared in (None, UNKNOWN), f"decoded, but expected {entry.declared}"
    assert (frame.camera, frame.seq) == ("cam-1", 7)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.__name__ for m in MUTATIONS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_mutation_gets_its_reason(mutation: Mutation, data: st.DataObject) -> None:
    draft = data.draw(valid_drafts("cam-2", 9))
    declared = mutation(data.draw, draft)
    fields = draft.fields()
    got = reason_of(fields)
    assert got in REASONS | {None}
    if declared != UNKNOWN:
        assert got == declared, f"{mutation.__name__}: got {got}, the rules say {declared}"


@MANY
@given(st.none() | st.binary(max_size=200), st.none() | st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_codec_errors(header: bytes | None, payload: bytes | None) -> None:
    assert reason_of({k: v for k, v in ((HEADER, header), (PAYLOAD, payload)) if v is not None}) in REASONS | {None}


@MANY
@given(st.dictionaries(st.sampled_from(["v", "cam", "seq", "ts", "codec", "len", "sum", "sumk", "shape", "dtype",
                                        "meta"]) | st.text(max_size=4),
                       values | wire_ints | st.sampled_from(["raw", "lz4", "bytes", "uint8", "xxh3", "none"]),
                       max_size=12),
       st.binary(max_size=64))
def test_arbitrary_header_maps_raise_only_codec_errors(header: dict[str, Any], payload: bytes) -> None:
    reason = reason_of({HEADER: msgpack.packb(header), PAYLOAD: payload})
    assert reason in REASONS | {None}


@MANY
@given(st.data())
def test_valid_frames_written_from_the_rules_decode_to_what_was_written(data: st.DataObject) -> None:
    draft = data.draw(valid_drafts(data.draw(st.text(min_size=1, max_size=256)), data.draw(st.integers(0, 2**63 - 1))))
    frame = decode(draft.fields())
    header = draft.header
    assert (frame.camera, frame.seq, frame.ts_ns, frame.meta) == (header["cam"], header["seq"], header["ts"],
                                                                  header.get("meta", {}))
    if header["codec"] == "bytes":
        assert bytes(frame.data) == draft.payload
    else:
        assert isinstance(frame.data, np.ndarray)
        assert (list(frame.data.shape), frame.data.dtype.str) == (header["shape"], np.dtype(header["dtype"]).str)
        assert frame.data.nbytes == math.prod(header["shape"]) * frame.data.itemsize


# -- round trips ----------------------------------------------------------------------------------------------
arrays = st.sampled_from(["<u1", "<u2", ">u2", "<f4", ">f4"]).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
)
frames = st.builds(
    Frame,
    camera=st.text(min_size=1, max_size=256),
    seq=st.integers(0, 2**63 - 1),
    data=arrays | arrays.map(lambda a: a[::2] if a.ndim else a) | st.binary(max_size=64),
    ts_ns=st.integers(0, 2**63 - 1),
    meta=st.dictionaries(st.text(max_size=8), meta_values, max_size=4),
)


@MANY
@given(frames, st.booleans(), st.sampled_from(["xxh3", "none"]))
def test_valid_frames_round_trip_exactly(frame: Frame, compress: bool, checksum: str) -> None:
    codec = FrameCodec(compress=compress, checksum=checksum)  # type: ignore[arg-type]
    encoded = codec.encode(frame)
    header = msgpack.unpackb(encoded.header)
    written = {"v", "cam", "seq", "ts", "codec", "len", "sum", "sumk"}
    written |= {"shape", "dtype"} if header["codec"] != "bytes" else set()
    written |= {"meta"} if frame.meta else set()
    assert set(header) == written, "writers write exactly these keys"
    got = codec.decode(encoded.header, bytes(encoded.payload))
    assert (got.camera, got.seq, got.ts_ns, got.meta) == (frame.camera, frame.seq, frame.ts_ns, frame.meta)
    if isinstance(frame.data, np.ndarray):
        assert isinstance(got.data, np.ndarray)
        want = frame.data.astype(frame.data.dtype.newbyteorder("<"))
        assert (got.data.shape, got.data.dtype.str) == (want.shape, want.dtype.str)
        assert got.data.tobytes() == want.tobytes()
    else:
        assert bytes(got.data) == frame.data


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("checksum", ["xxh3", "none"])
def test_compressible_arrays_travel_as_lz4_and_come_back_equal(dtype: str, checksum: str) -> None:
    array = np.tile(np.arange(64, dtype=dtype), (32, 4))
    codec = FrameCodec(compress=True, checksum=checksum)  # type: ignore[arg-type]
    encoded = codec.encode(Frame("cam", 3, array, 5, {"k": 1.5}))
    assert msgpack.unpackb(encoded.header)["codec"] == "lz4"
    np.testing.assert_array_equal(codec.decode(encoded.header, encoded.payload).data, array)


# -- encode refuses what would not decode ----------------------------------------------------------------------
odd_frames = st.builds(
    Frame,
    camera=st.text(max_size=300) | values,
    seq=wire_ints | st.integers() | not_ints,
    data=arrays | st.binary(max_size=16) | hnp.arrays(st.sampled_from(["i8", "f8", "?"]), 3) | values,
    ts_ns=wire_ints | st.integers() | not_ints,
    meta=st.dictionaries(st.text(max_size=4) | st.integers(-2, 2), values | st.integers(), max_size=3),
)


@MANY
@given(odd_frames)
def test_encode_refuses_with_codec_error_whatever_would_not_decode(frame: Frame) -> None:
    try:
        encoded = CODEC.encode(frame)
    except CodecError as exc:
        assert exc.reason in REASONS | {"unsupported_dtype"}, exc
        return
    got = CODEC.decode(encoded.header, bytes(encoded.payload))
    assert (got.camera, got.seq, got.ts_ns, got.meta) == (frame.camera, frame.seq, frame.ts_ns, frame.meta)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (Frame("", 1, b"x"), "bad_field: camera is '' (str), must be a str of 1 to 256 characters"),
        (Frame("c" * 257, 1, b"x"), "bad_field: camera is"),
        (Frame(7, 1, b"x"), "bad_field: camera is 7 (int)"),  # type: ignore[arg-type]
        (Frame("c", -1, b"x"), "bad_field: seq is -1 (int), must be an int 0 <= seq < 2**63"),
        (Frame("c", True, b"x"), "bad_field: seq is True (bool)"),
        (Frame("c", 2**63, b"x"), "bad_field: seq is 9223372036854775808"),
        (Frame("c", 1, b"x", -5), "bad_field: ts_ns is -5 (int)"),
        (Frame("c", 1, b"x", 1.5), "bad_field: ts_ns is 1.5 (float)"),  # type: ignore[arg-type]
        (Frame("c", 1, b"x", 1, {"a": [1]}), "bad_field: meta['a'] is [1] (list)"),  # type: ignore[dict-item]
        (Frame("c", 1, b"x", 1, {"a": 2**64}), "bad_field: meta['a'] is 18446744073709551616 (int), must be an int"),
        (Frame("c", 1, b"x", 1, {1: "a"}), "bad_field: meta[1] is 'a' (str)"),  # type: ignore[dict-item]
        (Frame("\ud800", 1, b"x"), "bad_field: header cannot be encoded (UnicodeEncodeError"),
        (Frame("c", 1, "text"), "bad_payload: frame data is a str, not an array or bytes"),  # type: ignore[arg-type]
        (Frame("c", 1, np.zeros((1,) * 9, np.uint8)), "bad_shape: shape (1, 1, 1, 1, 1, 1, 1, 1, 1) has more than 8"),
        (Frame("c", 1, np.zeros(2, np.int64)), "unsupported_dtype: dtype int64 is not supported"),
        (Frame("c", 1, b"x", 1, {"pad": "x" * 70000}), "bad_header: header is 700"),
    ],
)
def test_encode_names_what_is_wrong(frame: Frame, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        CODEC.encode(frame)
    assert str(caught.value).startswith(message)


def test_encode_refuses_a_zero_size_array_with_a_dimension_the_format_cannot_carry() -> None:
    array = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(0, 2**31), strides=(1, 1))
    with pytest.raises(CodecError, match="bad_shape"):
        CODEC.encode(Frame("c", 1, array))


# -- decode messages and limits --------------------------------------------------------------------------------
def _header(**changes: Any) -> bytes:
    header = {"v": 1, "cam": "c", "seq": 1, "ts": 1, "codec": "raw", "shape": [2], "dtype": "uint8", "len": 2,
              "sum": 0, "sumk": "none", **changes}
    return msgpack.packb({k: v for k, v in header.items() if v is not None})


@pytest.mark.parametrize(
    ("header", "payload", "message"),
    [
        (None, b"", "missing_header: entry has no header field"),
        (_header(), None, "missing_payload: entry has no payload field"),
        (_header(dtype=None), b"ab", "missing_field: header lacks dtype"),
        (_header(seq=None, ts=None), b"ab", "missing_field: header lacks seq, ts"),
        (b"\xc1", b"ab", "bad_header: header is not valid msgpack (FormatError)"),
        (b"\x91" * 2000 + b"\xc0", b"ab", "bad_header: header is not valid msgpack (StackError)"),
        (_header() + b"\x00", b"ab", "bad_header: header is not valid msgpack (ExtraData: "),
        (msgpack.packb([1]), b"ab", "bad_header: header is a msgpack list, not a map"),
        ("text", b"ab", "bad_header: header is a str, not bytes"),
        (msgpack.packb({"v": 1, b"k": 1}), b"ab", "bad_header: header key b'k' (bytes) is not a str"),
        (msgpack.packb({1: 1}), b"ab", "bad_header: header is not valid msgpack (ValueError: int is not allowed"),
        (_header(pad="x" * 65536), b"ab", "bad_header: header is 65614 bytes, more than 65536"),
        (_header(v=2), b"ab", "bad_version: format version 2 (int), this build reads 1"),
        (_header(v=True), b"ab", "bad_version: format version True (bool)"),
        (_header(seq="x"), b"ab", "bad_field: seq is 'x' (str), must be an int 0 <= seq < 2**63"),
        (_header(ts="1"), b"ab", "bad_field: ts is '1' (str)"),
        (_header(cam=3), b"ab", "bad_field: cam is 3 (int), must be a str of 1 to 256 characters"),
        (_header(len=True), b"ab", "bad_field: len is True (bool), must be an int >= 0"),
        (_header(sum=-1), b"ab", "bad_field: sum is -1 (int), must be an int 0 <= sum < 2**64"),
        (_header(sumk="md5"), b"ab", "bad_header: unknown checksum kind 'md5' (str)"),
        (_header(meta=[1]), b"ab", "bad_field: meta is [1] (list), must be a map"),
        (_header(codec="jpeg"), b"ab", "bad_codec: unknown payload codec 'jpeg' (str)"),
        (_header(codec="bytes"), b"ab", "bad_header: a bytes payload has no shape or dtype"),
        (_header(dtype="int64"), b"ab", "bad_dtype: dtype is 'int64' (str), must be one of float32, uint16, uint8"),
        (_header(shape=[-1]), b"ab", "bad_shape: shape is [-1] (list), must be an array of ints 0 <= d < 2**31"),
        (_header(shape=[1] * 9), b"ab", "bad_shape: shape is [1, 1, 1, 1, 1, 1, 1, 1, 1] (list), must be an array of "
                                        "0 to 8 ints"),
        (_header(shape=[2**31 - 1] * 8), b"ab",
         "bad_shape: shape [2147483647, 2147483647, 2147483647, 2147483647, 21474836... of uint8 is 4.523e+74 bytes"),
        (_header(shape=[3]), b"ab", "bad_shape: shape [3] of uint8 is 3 bytes, len says 2"),
        (_header(shape=[0, 2**31 - 1, 2**31 - 1, 3], len=0), b"", "bad_shape: shape is [0, 2147483647, 2147483647, 3] "
                                                                 "(list), must be empty or not, dimensions whose"),
        (_header(), b"a", "truncated: payload is 1 bytes, header says 2"),
        (_header(), b"abc", "bad_length: payload is 3 bytes, header says 2"),
        (_header(sum=1), b"ab", "bad_checksum: payload checksum does not match the header"),
        (_header(codec="lz4", len=3, sum=0), b"abc", "bad_payload: lz4 payload of 3 bytes has no size prefix"),
        (_header(codec="lz4", len=5), b"\x03\x00\x00\x00a", "bad_shape: lz4 size prefix says 3 bytes, shape and "
                                                            "dtype say 2"),
        (_header(codec="lz4", len=5), b"\x02\x00\x00\x00\xff", "bad_payload: lz4 block does not decompress"),
        (_header(codec="lz4", shape=[10**5, 10**5, 3], len=5), b"\xff\xff\xff\xff\x00",
         "frame_too_large: frame is 30000000000 bytes, over the maximum of 33554432"),
    ],
)
def test_decode_names_what_is_wrong(header: Any, payload: bytes | None, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        CODEC.decode(header, payload)
    assert str(caught.value).startswith(message), str(caught.value)


def test_frames_over_the_readers_maximum_are_refused_before_decompression() -> None:
    encoded = FrameCodec(compress=True).encode(Frame("c", 1, np.zeros((100, 100), np.uint8)))
    with pytest.raises(FrameTooLarge, match="frame_too_large: frame is 10000 bytes, over the maximum of 9999"):
        FrameCodec(max_frame_bytes=9999).decode(encoded.header, encoded.payload)
    raw = FrameCodec().encode(Frame("c", 1, b"x" * 100))
    with pytest.raises(FrameTooLarge, match="frame is 100 bytes"):
        FrameCodec(max_frame_bytes=99).decode(raw.header, raw.payload)


def test_a_decompression_bomb_allocates_nothing_big() -> None:
    """An LZ4 block that claims 3 GB (prefix and shape agree) is refused on the header, before any allocation."""
    payload = (3 * 10**9).to_bytes(4, "little") + b"\x00" * 12
    header = _header(codec="lz4", shape=[3, 10**9], len=len(payload), sum=0)
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge):
            CODEC.decode(header, payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_an_empty_array_with_huge_dimensions_decodes_while_numpy_can_make_it() -> None:
    frame = CODEC.decode(_header(shape=[0, 2**31 - 1, 2**31 - 1, 2], len=0), b"")
    assert frame.data.shape == (0, 2**31 - 1, 2**31 - 1, 2)  # type: ignore[union-attr]


def test_a_raw_frame_decodes_as_a_read_only_view_of_the_payload() -> None:
    payload = bytes(range(6))
    frame = CODEC.decode(_header(shape=[2, 3], len=6), payload)
    assert isinstance(frame.data, np.ndarray)
    assert not frame.data.flags.writeable and frame.data.base is not None
    assert frame.data.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_unknown_keys_and_other_stream_fields_are_ignored() -> None:
    frame = CODEC.decode(_header(future={"x": [1, 2]}, len=2), b"ab")
    assert frame.data.tolist() == [97, 98]  # type: ignore[union-attr]
    assert reason_of({HEADER: _header(), PAYLOAD: b"ab", b"other": b"field"}) is None

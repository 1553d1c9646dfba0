"""Hypothesis strategies for stream entries: valid frames, and mutations of them with the reason each must get.

Valid entries are written here from the wire rules (docs/wire-format.md), not with ``FrameCodec.encode``, so a
test built on them checks the decoder against the rules. A mutation changes one thing and declares the
dead-letter reason the rules give it (``None``: the entry is still a valid frame; ``UNKNOWN``: the rules allow
several outcomes, e.g. random bytes or several mutations at once). The codec property tests check every declared
reason; the live tests compare dead letters with ``Entry.expected``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lz4.block
import msgpack
import xxhash
from hypothesis import strategies as st

from frame_buffer.codec import CodecError, FrameCodec

HEADER, PAYLOAD = b"h", b"p"
UNKNOWN = "?"
#: Every reason a hostile entry may be dead-lettered with.
REASONS = frozenset({
    "missing_header", "missing_payload", "bad_header", "missing_field", "bad_version", "bad_field", "bad_codec",
    "truncated", "bad_length", "bad_checksum", "bad_dtype", "bad_shape", "bad_payload", "frame_too_large",
})
REQUIRED = ("v", "cam", "seq", "ts", "codec", "len", "sum")
KNOWN_KEYS = (*REQUIRED, "sumk", "shape", "dtype", "meta")
ITEMSIZE = {"uint8": 1, "uint16": 2, "float32": 4}
MAX_FRAME_BYTES = 32 * 1024 * 1024  # FrameCodec's default, which the services under test use
_ORACLE = FrameCodec()

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
           | st.binary(max_size=12))
_odd = (st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
        | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)))
#: Anything msgpack can carry: nested lists and maps (str keys), ext types and timestamps.
values = st.recursive(scalars | _odd, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
meta_values = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
               | st.text(max_size=12))
#: Integers msgpack can pack, from both ends of the range.
wire_ints = st.integers(-(2**63), 2**64 - 1)
not_ints = st.none() | st.booleans() | st.floats() | st.text(max_size=6) | st.binary(max_size=6) | st.lists(
    st.integers(0, 3), max_size=2) | _odd


def other_than(*allowed: str) -> Callable[[object], bool]:
    """A filter: true for any value but the strings in ``allowed`` (values may be unhashable)."""
    return lambda value: not (isinstance(value, str) and value in allowed)


def checksum(kind: str, payload: bytes) -> int:
    return xxhash.xxh3_64_intdigest(payload) if kind == "xxh3" else 0


@dataclass
class Draft:
    """An entry being built: the header as a map (packed at the end unless ``header_bytes`` replaces it)."""

    header: dict[str, Any]
    payload: bytes
    header_bytes: bytes | None = None
    leave_out: set[bytes] = field(default_factory=set)
    extra: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def codec(self) -> object:
        return self.header.get("codec")

    def restamp(self) -> None:
        """``len`` and ``sum`` made right for the (changed) payload, so that only the intended defect shows."""
        self.header["len"] = len(self.payload)
        self.header["sum"] = checksum(self.header.get("sumk", "xxh3"), self.payload)

    def fields(self) -> dict[bytes, bytes]:
        packed = self.header_bytes if self.header_bytes is not None else msgpack.packb(self.header)
        fields = {HEADER: packed, PAYLOAD: self.payload, **self.extra}
        return {name: value for name, value in fields.items() if name not in self.leave_out}


@dataclass(frozen=True)
class Entry:
    """A stream entry's fields and what must become of it."""

    fields: dict[bytes, bytes]
    declared: str | None  # a reason, None for a valid frame, or UNKNOWN
    camera: str
    seq: int

    @property
    def expected(self) -> str | None:
        """The reason it must be dead-lettered with (None: delivered); the codec decides the UNKNOWN ones."""
        return reason_of(self.fields) if self.declared == UNKNOWN else self.declared


def reason_of(fields: dict[bytes, bytes]) -> str | None:
    """What the codec makes of these fields: None when they decode, else the CodecError's reason."""
    try:
        _ORACLE.decode(fields.get(HEADER), fields.get(PAYLOAD))
    except CodecError as exc:
        return exc.reason
    return None


# -- valid frames, from the rules ------------------------------------------------------------------------------
@st.composite
def valid_drafts(draw: st.DrawFn, camera: str, seq: int) -> Draft:
    """A valid frame of any codec, dtype (0 to 4 small dims), checksum kind, with or without meta."""
    codec = draw(st.sampled_from(["raw", "lz4", "bytes"]))
    sumk = draw(st.sampled_from(["xxh3", "none"]))
    header: dict[str, Any] = {"v": 1, "cam": camera, "seq": seq, "ts": draw(st.integers(0, 2**63 - 1))}
    if codec == "bytes":
        payload = draw(st.binary(max_size=64))
    else:
        dtype = draw(st.sampled_from(sorted(ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 5), max_size=4))
        size = math.prod(shape) * ITEMSIZE[dtype]
        raw = draw(st.binary(min_size=size, max_size=size) | st.just(bytes(size)))
        payload = lz4.block.compress(raw, store_size=True) if codec == "lz4" else raw
        header.update(shape=shape, dtype=dtype)
    header.update(codec=codec, len=len(payload), sum=checksum(sumk, payload), sumk=sumk)
    meta = draw(st.dictionaries(st.text(max_size=8), meta_values, max_size=3))
    if meta:
        header["meta"] = meta
    return Draft(header, payload)


# -- mutations: each changes one thing and returns the reason the rules give it ----------------------------------
Mutation = Callable[[st.DrawFn, Draft], str | None]


def _is_array(draft: Draft) -> bool:
    return draft.codec in ("raw", "lz4")


def _size(header: dict[str, Any]) -> int | None:
    """Bytes of the array the header describes, None when its shape or dtype is not one."""
    shape, dtype = header.get("shape"), header.get("dtype")
    if not isinstance(shape, list) or not all(type(dim) is int for dim in shape) or not (
            isinstance(dtype, str) and dtype in ITEMSIZE):
        return None
    return math.prod(shape) * ITEMSIZE[dtype]


def drop_required(draw: st.DrawFn, d: Draft) -> str | None:
    keys = REQUIRED + (("shape", "dtype") if _is_array(d) else ())
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        d.header.pop(key, None)  # absent already when combined with other mutations
    return "missing_field"


def bad_version(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["v"] = draw(wire_ints.filter(lambda v: v != 1) | not_ints | st.just(True))
    return "bad_version"


def bad_camera(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["cam"] = draw(st.just("") | st.text(min_size=257, max_size=300) | wire_ints | not_ints.filter(
        lambda v: not isinstance(v, str) or not 0 < len(v) <= 256))
    return "bad_field"


def bad_int_field(draw: st.DrawFn, d: Draft) -> str | None:
    name = draw(st.sampled_from(["seq", "ts", "len", "sum"]))
    low, high = {"seq": (0, 2**63), "ts": (0, 2**63), "len": (0, 2**64), "sum": (0, 2**64)}[name]
    d.header[name] = draw(wire_ints.filter(lambda v: not low <= v < high) | not_ints)
    return "bad_field"


def wrong_checksum(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["sum"] = draw(st.integers(0, 2**64 - 1).filter(lambda v: v != d.header.get("sum")))
    return "bad_checksum"


def flip_payload_byte(draw: st.DrawFn, d: Draft) -> str | None:
    if not d.payload or d.header.get("sumk") != "xxh3":
        return None
    at = draw(st.integers(0, len(d.payload) - 1))
    d.payload = d.payload[:at] + bytes([d.payload[at] ^ draw(st.integers(1, 255))]) + d.payload[at + 1:]
    return "bad_checksum"


def bad_sumk(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["sumk"] = draw(st.sampled_from(["md5", "", "XXH3", "xxh64"]) | not_ints.filter(other_than("xxh3", "none"))
                            | wire_ints)
    return "bad_header"


def drop_sumk(draw: st.DrawFn, d: Draft) -> str | None:
    kind = d.header.pop("sumk", None)
    return None if kind == "xxh3" else "bad_checksum"  # the default is xxh3; a "none" frame's sum is 0


def bad_codec(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["codec"] = draw(st.sampled_from(["jpeg", "", "RAW", "lz4f", "zstd"])
                             | not_ints.filter(other_than("raw", "lz4", "bytes")) | wire_ints)
    return "bad_codec"


def switch_codec(draw: st.DrawFn, d: Draft) -> str | None:
    if _is_array(d):
        d.header["codec"] = "bytes"  # shape and dtype stay
        return "bad_header"
    d.header["codec"] = draw(st.sampled_from(["raw", "lz4"]))  # without shape and dtype
    return "missing_field"


def bytes_with_shape(draw: st.DrawFn, d: Draft) -> str | None:
    if _is_array(d):
        return None
    d.header.update(draw(st.sampled_from([{"shape": [1]}, {"dtype": "uint8"}, {"shape": [], "dtype": "uint8"}])))
    return "bad_header"


def bad_meta(draw: st.DrawFn, d: Draft) -> str | None:
    container = st.lists(values, max_size=2) | st.dictionaries(st.text(max_size=4), values, max_size=2)
    d.header["meta"] = draw(
        st.none() | scalars | container.filter(lambda v: not isinstance(v, dict))
        | st.dictionaries(st.text(max_size=6), container | st.binary(max_size=4) | _odd, min_size=1, max_size=2)
    )
    return "bad_field"


def meta_with_int_key(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["meta"] = {draw(st.integers(-5, 5)): "x"}
    return "bad_header"  # msgpack itself refuses a non-str map key


def bad_dtype(draw: st.DrawFn, d: Draft) -> str | None:
    if not _is_array(d):
        return None
    d.header["dtype"] = draw(st.sampled_from(["int64", "<u1", ">u2", "uint8 ", "", "float64", "bool", "UINT8"])
                             | not_ints.filter(other_than(*ITEMSIZE)) | wire_ints)
    return "bad_dtype"


def bad_shape_form(draw: st.DrawFn, d: Draft) -> str | None:
    if not _is_array(d):
        return None
    dim = st.integers(0, 4)
    d.header["shape"] = draw(
        st.lists(dim, min_size=9, max_size=12)  # too many dims
        | st.lists(dim, max_size=3).flatmap(lambda s: st.tuples(st.just(s), st.integers(-(2**63), -1) | st.integers(
            2**31, 2**64 - 1) | not_ints).map(lambda t: [*t[0], t[1]]))  # one bad dim
        | values.filter(lambda v: not isinstance(v, list))  # not an array
    )
    return "bad_shape"


def other_shape(draw: st.DrawFn, d: Draft) -> str | None:
    """A well-formed shape of another size: a raw frame contradicts its len, an lz4 frame its size prefix."""
    if not _is_array(d):
        return None
    old = _size(d.header)
    d.header["shape"] = draw(st.lists(st.integers(0, 6), max_size=4)
                             | st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=8))
    size = _size(d.header)
    if old is None or size is None:
        return UNKNOWN  # combined with a mutation of dtype
    if size == 0 and math.prod(dim for dim in d.header["shape"] if dim) * ITEMSIZE[d.header["dtype"]] >= 2**63:
        return "bad_shape"  # empty, but with dimensions no 64-bit reader can make an array of
    if size == old:
        return None  # the same bytes read as another shape: a valid frame
    return "frame_too_large" if d.codec == "lz4" and size > MAX_FRAME_BYTES else "bad_shape"


def decompression_bomb(draw: st.DrawFn, d: Draft) -> str | None:
    """Claims a huge frame: refused before anything is decompressed or allocated."""
    if d.codec == "bytes":
        d.header["len"] = draw(st.integers(MAX_FRAME_BYTES + 1, 2**64 - 1))
        return "frame_too_large"
    d.header.update(codec="lz4", dtype="uint8", shape=draw(st.sampled_from([[100_000, 100_000, 3], [2**31 - 1] * 8,
                                                                             [6000, 6000]])))
    d.payload = (2**32 - 1).to_bytes(4, "little") + draw(st.binary(max_size=16))
    d.restamp()
    return "frame_too_large"


def truncate_payload(draw: st.DrawFn, d: Draft) -> str | None:
    if not d.payload:
        return None
    d.payload = d.payload[:draw(st.integers(0, len(d.payload) - 1))]
    return "truncated"


def extend_payload(draw: st.DrawFn, d: Draft) -> str | None:
    d.payload += draw(st.binary(min_size=1, max_size=16))
    return "bad_length"


def lz4_lying_prefix(draw: st.DrawFn, d: Draft) -> str | None:
    if d.codec != "lz4":
        return None
    prefix = int.from_bytes(d.payload[:4], "little")
    lie = draw(st.integers(0, 2**32 - 1).filter(lambda v: v != prefix))
    d.payload = lie.to_bytes(4, "little") + d.payload[4:]
    d.restamp()
    return "bad_shape"


def lz4_without_prefix(draw: st.DrawFn, d: Draft) -> str | None:
    if d.codec != "lz4":
        return None
    d.payload = draw(st.binary(max_size=3))
    d.restamp()
    return "bad_payload"


def lz4_corrupt_block(draw: st.DrawFn, d: Draft) -> str | None:
    if d.codec != "lz4":
        return None
    d.payload = d.payload[:4] + draw(st.binary(max_size=64))
    d.restamp()
    return UNKNOWN  # usually bad_payload; a block that happens to decompress to the right size is a frame


def extra_keys(draw: st.DrawFn, d: Draft) -> str | None:
    d.header.update(draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in KNOWN_KEYS), values,
                                         min_size=1, max_size=4)))
    return None  # unknown keys are ignored


def bin_key(draw: st.DrawFn, d: Draft) -> str | None:
    d.header[draw(st.binary(max_size=6))] = draw(values)  # type: ignore[index]
    return "bad_header"  # header keys are str; msgpack bin is not


def truncate_header(draw: st.DrawFn, d: Draft) -> str | None:
    packed = msgpack.packb(d.header)
    d.header_bytes = packed[:draw(st.integers(0, len(packed) - 1))]
    return "bad_header"


def trailing_header_bytes(draw: st.DrawFn, d: Draft) -> str | None:
    d.header_bytes = msgpack.packb(d.header) + draw(st.binary(min_size=1, max_size=8))
    return "bad_header"


def oversized_header(draw: st.DrawFn, d: Draft) -> str | None:
    d.header["pad"] = "x" * draw(st.integers(65536, 70000))
    return "bad_header"


def header_not_a_map(draw: st.DrawFn, d: Draft) -> str | None:
    d.header_bytes = msgpack.packb(draw(values.filter(lambda v: not isinstance(v, dict))))
    return "bad_header"


def header_not_msgpack(draw: st.DrawFn, d: Draft) -> str | None:
    d.header_bytes = draw(st.sampled_from([b"\xc1", b"\xc1\x80", b"", b"\x81\xa1v", b"\xdf\xff\xff\xff\xff",
                                           b"\x91" * 1000 + b"\x00", b"\x81\x01\x01", b"\x81\xa1\xff\x01"]))
    return "bad_header"


def random_header(draw: st.DrawFn, d: Draft) -> str | None:
    d.header_bytes = draw(st.binary(max_size=64))
    return UNKNOWN


def arbitrary_map(draw: st.DrawFn, d: Draft) -> str | None:
    """Any map over the known keys and others, with any values: mostly wrong, in every combination."""
    keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6) | st.binary(max_size=2)
    d.header = draw(st.dictionaries(keys, values | wire_ints | st.sampled_from(["raw", "lz4", "bytes", "uint8"]),
                                    max_size=12))
    d.payload = draw(st.binary(max_size=64))
    return UNKNOWN


def leave_out_header(draw: st.DrawFn, d: Draft) -> str | None:
    d.leave_out.add(HEADER)
    if draw(st.booleans()):
        d.leave_out.add(PAYLOAD)
        d.extra[b"x"] = b"an entry needs one field"
    return "missing_header"


def leave_out_payload(draw: st.DrawFn, d: Draft) -> str | None:
    d.leave_out.add(PAYLOAD)
    return "missing_payload"


def odd_field_names(draw: st.DrawFn, d: Draft) -> str | None:
    """The fields under other names (``H``, ``h ``, ...): as good as absent."""
    d.leave_out.add(HEADER)
    d.extra[draw(st.sampled_from([b"H", b"h ", b"header", b"\x00h"]))] = msgpack.packb(d.header)
    return "missing_header"


def extra_stream_fields(draw: st.DrawFn, d: Draft) -> str | None:
    names = st.binary(min_size=1, max_size=8).filter(lambda n: n not in (HEADER, PAYLOAD))
    d.extra.update(draw(st.dictionaries(names, st.binary(max_size=16), min_size=1, max_size=3)))
    return None  # other fields are ignored


MUTATIONS: tuple[Mutation, ...] = (
    drop_required, bad_version, bad_camera, bad_int_field, wrong_checksum, flip_payload_byte, bad_sumk, drop_sumk,
    bad_codec, switch_codec, bytes_with_shape, bad_meta, meta_with_int_key, bad_dtype, bad_shape_form, other_shape,
    decompression_bomb, truncate_payload, extend_payload, lz4_lying_prefix, lz4_without_prefix, lz4_corrupt_block,
    extra_keys, bin_key, truncate_header, trailing_header_bytes, oversized_header, header_not_a_map, header_not_msgpack,
    random_header, arbitrary_map, leave_out_header, leave_out_payload, odd_field_names, extra_stream_fields,
)
#: Mutations of the header map only: several of them can be combined.
MAP_MUTATIONS: tuple[Mutation, ...] = (
    drop_required, bad_version, bad_camera, bad_int_field, wrong_checksum, bad_sumk, drop_sumk, bad_codec,
    switch_codec, bytes_with_shape, bad_meta, bad_dtype, bad_shape_form, other_shape, extra_keys,
)


@st.composite
def entries(draw: st.DrawFn, camera: str, seq: int, mutations: tuple[Mutation, ...] = MUTATIONS) -> Entry:
    """One entry: a valid frame, one mutation of it (with its declared reason), or several at once."""
    draft = draw(valid_drafts(camera, seq))
    how = draw(st.sampled_from(["valid", "one", "one", "one", "several"]))
    declared: str | None = None
    if how == "one":
        declared = draw(st.sampled_from(mutations))(draw, draft)
    elif how == "several":
        for mutation in draw(st.lists(st.sampled_from(MAP_MUTATIONS), min_size=2, max_size=4)):
            mutation(draw, draft)
        declared = UNKNOWN
    return Entry(draft.fields(), declared, camera, seq)


@st.composite
def batches(draw: st.DrawFn, prefix: str, max_size: int = 10) -> list[Entry]:
    """Entries of cameras ``<prefix>-<i>``, one frame each: a delivered frame tells which entry it was."""
    count = draw(st.integers(1, max_size))
    return [draw(entries(f"{prefix}-{index}", index)) for index in range(count)]


def valid_fields(camera: str, seq: int) -> dict[bytes, bytes]:
    """A small valid ``bytes`` frame, for filling up to a known count."""
    header = {"v": 1, "cam": camera, "seq": seq, "ts": 1, "codec": "bytes", "len": 1, "sum": 0, "sumk": "none"}
    return {HEADER: msgpack.packb(header), PAYLOAD: b"x"}



"""Wire format: a small msgpack header plus the payload as a separate buffer.

Header and payload travel as two fields (two stream fields in Redis, header-in-properties in RabbitMQ)
so a frame is never concatenated or copied on the way out: an uncompressed array is sent straight from
its own memory. The header carries a format version, camera, seq, capture time, shape, dtype, codec,
payload length and a checksum of the payload as sent. docs/wire-format.md is the specification.

Decoding is total: whatever bytes a stream holds, :meth:`FrameCodec.decode` returns a :class:`Frame` or raises
:class:`CodecError` with a reason tag, so one hostile entry is dead-lettered and never stops a consumer.
Encoding refuses, with the same tags, any frame that would not decode. The checks compare ``type(x)`` with
exact types (``bool`` is not an ``int`` here, and it is fast): they cost about a microsecond per frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import lz4.block
import msgpack
import numpy as np
import xxhash

from frame_buffer.errors import EXIT_CONFIG, FrameBufferError
from frame_buffer.frame import Frame

FORMAT_VERSION = 1
SUPPORTED_DTYPES = frozenset({"uint8", "uint16", "float32"})
#: Largest payload (decompressed) a codec accepts unless told otherwise; the service's default too.
DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024
# Lookups by dict: ``ndarray.dtype.name`` costs about 15 us per call in numpy 2, more than the rest of encode.
_NAME_OF = {np.dtype(name): name for name in SUPPORTED_DTYPES}
_LITTLE_ENDIAN = {name: np.dtype(name).newbyteorder("<") for name in SUPPORTED_DTYPES}
_ITEMSIZE = {name: np.dtype(name).itemsize for name in SUPPORTED_DTYPES}
#: ``raw``: numpy bytes as-is; ``lz4``: numpy bytes LZ4-compressed; ``bytes``: an already-encoded payload.
PayloadCodec = Literal["raw", "lz4", "bytes"]
Checksum = Literal["xxh3", "none"]
_CODECS = frozenset({"raw", "lz4", "bytes"})
_ARRAY_CODECS = frozenset({"raw", "lz4"})
_CHECKSUMS = frozenset({"xxh3", "none"})
_REQUIRED = ("v", "cam", "seq", "ts", "codec", "len", "sum")
_ARRAY_REQUIRED = ("shape", "dtype")
_KEYS = frozenset(_REQUIRED)
_ARRAY_KEYS = frozenset(_REQUIRED + _ARRAY_REQUIRED)
_KNOWN_KEYS = frozenset((*_REQUIRED, *_ARRAY_REQUIRED, "sumk", "meta"))

#: Limits of the format (docs/wire-format.md).
MAX_HEADER_BYTES = 65536
MAX_CAMERA_CHARS = 256
MAX_DIMS = 8
_DIM_LIMIT = 2**31
_INT63 = 2**63
_UINT64 = 2**64
_LZ4_PREFIX = 4
_BUFFERS = (bytes, bytearray, memoryview)
_META_TYPES = frozenset({str, int, float, bool, type(None)})
_ABSENT: Any = object()


class CodecError(FrameBufferError, ValueError):
    """A frame could not be encoded or decoded; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class FrameTooLarge(CodecError):
    """The payload exceeds the configured maximum frame size."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A frame on the wire: ``header`` (msgpack) and ``payload`` (a buffer, not copied)."""

    header: bytes
    payload: bytes | memoryview

    @property
    def nbytes(self) -> int:
        """Bytes on the wire."""
        return len(self.header) + memoryview(self.payload).nbytes


def _checksum(kind: str, payload: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(payload) if kind == "xxh3" else 0


def _short(value: object) -> str:
    """A bounded repr: hostile values can be 64 KiB long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size(size: int) -> str:
    """A byte count for an error message: a hostile shape's can have 75 digits."""
    return str(size) if size < 10**15 else f"{size:.3e}"


def _show(value: object) -> str:
    """A value for an error message: its repr (bounded) and its type."""
    return f"{_short(value)} ({type(value).__name__})"


def _describe(exc: BaseException) -> str:
    """An exception for an error message; never empty (msgpack raises some with no text)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bad(reason: str, name: str, value: object, rule: str) -> NoReturn:
    raise CodecError(reason, f"{name} is {_show(value)}, must be {rule}")


def _check_meta(meta: object) -> dict[str, Any]:
    if type(meta) is not dict:
        _bad("bad_field", "meta", meta, "a map of str to str, int, float, bool or nil")
    for key, value in meta.items():
        if type(key) is not str or type(value) not in _META_TYPES:
            _bad("bad_field", f"meta[{_short(key)}]", value, "str, int, float, bool or nil under a str key")
        if type(value) is int and not -_INT63 <= value < _UINT64:
            _bad("bad_field", f"meta[{_short(key)}]", value, "an int that fits 64 bits")
    return meta


def _shape_bytes(shape: object, itemsize: int) -> int:
    """Bytes an array of ``shape`` holds; raises ``bad_shape`` for anything but 0 to 8 dims in [0, 2**31) (and
    for an empty shape whose non-zero dims multiply to 2**63 bytes or more: no 64-bit reader can make it)."""
    if type(shape) is not list or len(shape) > MAX_DIMS:
        _bad("bad_shape", "shape", shape, f"an array of 0 to {MAX_DIMS} ints")
    size = itemsize
    for dim in shape:
        if type(dim) is not int or not 0 <= dim < _DIM_LIMIT:
            _bad("bad_shape", "shape", shape, "an array of ints 0 <= d < 2**31")
        size *= dim
    if size == 0 and math.prod(dim for dim in shape if dim) * itemsize >= _INT63:
        # An empty array, but numpy (and any reader on 64-bit sizes) refuses dimensions that multiply this far.
        _bad("bad_shape", "shape", shape, "empty or not, dimensions whose non-zero product is < 2**63 bytes")
    return size


def _unpack(header: object) -> dict[str, Any]:
    if type(header) not in _BUFFERS:
        raise CodecError("bad_header", f"header is a {type(header).__name__}, not bytes")
    size = memoryview(header).nbytes if type(header) is memoryview else len(header)  # type: ignore[arg-type]
    if size > MAX_HEADER_BYTES:
        raise CodecError("bad_header", f"header is {size} bytes, more than {MAX_HEADER_BYTES}")
    try:
        fields = msgpack.unpackb(
            header, raw=False, strict_map_key=True, max_str_len=MAX_HEADER_BYTES, max_bin_len=MAX_HEADER_BYTES,
            max_array_len=MAX_HEADER_BYTES, max_map_len=MAX_HEADER_BYTES, max_ext_len=MAX_HEADER_BYTES,
        )
    except Exception as exc:  # untrusted bytes: whatever the parser raises means "not a valid header"
        raise CodecError("bad_header", f"header is not valid msgpack ({_describe(exc)})") from exc
    if type(fields) is not dict:
        raise CodecError("bad_header", f"header is a msgpack {type(fields).__name__}, not a map")
    if not _KNOWN_KEYS.issuperset(fields):  # only unknown keys can be bin (msgpack refuses other key types)
        for key in fields:
            if type(key) is not str:
                raise CodecError("bad_header", f"header key {_show(key)} is not a str")
    return fields


class FrameCodec:
    """Encodes :class:`Frame` values to :class:`EncodedFrame` and back.

    Args:
        compress: try LZ4 on array payloads; kept only when it makes the frame smaller.
        checksum: ``xxh3`` (default, about 0.2 ms per Full HD frame here) or ``none`` to skip hashing.
            Decoding always verifies what the header says was used.
        max_frame_bytes: a frame whose payload (decompressed) is larger than this is refused with
            :class:`FrameTooLarge`: at encode time, and at decode time before anything is decompressed.
    """

    def __init__(
        self, *, compress: bool = False, checksum: Checksum = "xxh3", max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    ) -> None:
        if checksum not in _CHECKSUMS:
            raise ValueError(f"checksum must be 'xxh3' or 'none', not {checksum!r}")
        self.compress = compress
        self.checksum: Checksum = checksum
        self.max_frame_bytes = max_frame_bytes

    # -- encode -----------------------------------------------------------------------------------------
    def encode(self, frame: Frame) -> EncodedFrame:
        """Encode ``frame``; raises :class:`CodecError` for a frame that would not decode, :class:`FrameTooLarge`."""
        camera, seq, ts = frame.camera, frame.seq, frame.ts_ns
        if type(camera) is not str or not 0 < len(camera) <= MAX_CAMERA_CHARS:
            _bad("bad_field", "camera", camera, f"a str of 1 to {MAX_CAMERA_CHARS} characters")
        if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < _INT63):
            _bad("bad_field", "seq", seq, "an int 0 <= seq < 2**63")
        if not (isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < _INT63):
            _bad("bad_field", "ts_ns", ts, "an int 0 <= ts_ns < 2**63 (ns since the Unix epoch)")
        header: dict[str, Any] = {"v": FORMAT_VERSION, "cam": camera, "seq": int(seq), "ts": int(ts)}
        payload: bytes | memoryview
        if isinstance(frame.data, np.ndarray):
            array = frame.data
            name = _NAME_OF.get(array.dtype)
            if name is None:
                if array.dtype.name not in SUPPORTED_DTYPES:
                    raise CodecError(
                        "unsupported_dtype",
                        f"dtype {array.dtype.name} is not supported (use one of {sorted(SUPPORTED_DTYPES)})",
                    )
                # Little-endian on the wire; a big-endian array is converted once here.
                name = array.dtype.name
                array = array.astype(_LITTLE_ENDIAN[name])
            shape = array.shape
            if len(shape) > MAX_DIMS or (shape and max(shape) >= _DIM_LIMIT):
                raise CodecError("bad_shape", f"shape {shape} has more than {MAX_DIMS} dims or one >= 2**31")
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            header["shape"] = list(shape)
            header["dtype"] = name
            # A view of the array's own memory; 0-d and empty arrays cannot be cast to bytes (and are tiny).
            payload = memoryview(array.data).cast("B") if array.ndim and array.size else memoryview(array.tobytes())
            codec: PayloadCodec = "raw"
            self._check_size(frame, payload.nbytes)
            if self.compress:
                packed = lz4.block.compress(payload, store_size=True)
                if len(packed) < payload.nbytes:
                    payload, codec = packed, "lz4"
        else:
            payload = frame.data
            if type(payload) not in _BUFFERS:
                raise CodecError("bad_payload", f"frame data is a {type(payload).__name__}, not an array or bytes")
            codec = "bytes"
            self._check_size(frame, memoryview(payload).nbytes)
        header["codec"] = codec
        header["len"] = memoryview(payload).nbytes
        header["sum"] = _checksum(self.checksum, payload)
        header["sumk"] = self.checksum
        if frame.meta:
            header["meta"] = _check_meta(frame.meta)
        try:
            packed_header = msgpack.packb(header)
        except (ValueError, TypeError, OverflowError) as exc:  # a str that is not UTF-8 (lone surrogates)
            raise CodecError("bad_field", f"header cannot be encoded ({_describe(exc)})") from exc
        if len(packed_header) > MAX_HEADER_BYTES:
            raise CodecError("bad_header", f"header is {len(packed_header)} bytes, more than {MAX_HEADER_BYTES}")
        return EncodedFrame(packed_header, payload)

    def _check_size(self, frame: Frame, size: int) -> None:
        if size > self.max_frame_bytes:
            raise FrameTooLarge(
                "frame_too_large",
                f"frame {frame.camera}/{frame.seq} is {size} bytes, over the maximum of {self.max_frame_bytes}",
            )

    # -- decode -----------------------------------------------------------------------------------------
    def decode(self, header: bytes | None, payload: bytes | memoryview | None) -> Frame:
        """Decode a header and payload; raises :class:`CodecError` (and nothing else) naming what is wrong.

        The checks run in this order and the first that fails gives the reason: missing_header,
        missing_payload, bad_header (size, msgpack, not a map, a key not a str), bad_version, missing_field,
        bad_codec, bad_field (cam, seq, ts, len, sum), bad_header (sumk), bad_field (meta); for ``bytes`` bad_header
        (shape or dtype present); for raw/lz4 bad_dtype, bad_shape (form, then raw: len against shape);
        frame_too_large; truncated / bad_length; bad_checksum; for lz4 bad_payload (no prefix), bad_shape
        (prefix), bad_payload (block). Nothing is decompressed before its size is known to be allowed.

        The returned array is a read-only view of ``payload`` when it was sent uncompressed.
        """
        if header is None:
            raise CodecError("missing_header", "entry has no header field")
        if payload is None:
            raise CodecError("missing_payload", "entry has no payload field")
        fields = _unpack(header)
        version = fields.get("v", _ABSENT)
        if version is not _ABSENT and not (type(version) is int and version == FORMAT_VERSION):
            raise CodecError("bad_version", f"format version {_show(version)}, this build reads {FORMAT_VERSION}")
        codec = fields.get("codec")
        array_codec = type(codec) is str and codec in _ARRAY_CODECS
        if not fields.keys() >= (_ARRAY_KEYS if array_codec else _KEYS):
            wanted = _REQUIRED + _ARRAY_REQUIRED if array_codec else _REQUIRED
            raise CodecError("missing_field", f"header lacks {', '.join(k for k in wanted if k not in fields)}")
        if type(codec) is not str or codec not in _CODECS:
            raise CodecError("bad_codec", f"unknown payload codec {_show(codec)}")
        camera, seq, ts, length, expected_sum = fields["cam"], fields["seq"], fields["ts"], fields["len"], fields["sum"]
        if type(camera) is not str or not 0 < len(camera) <= MAX_CAMERA_CHARS:
            _bad("bad_field", "cam", camera, f"a str of 1 to {MAX_CAMERA_CHARS} characters")
        # Inline type checks (no helper call): this is the per-frame hot path.
        if type(seq) is not int or not 0 <= seq < _INT63:
            _bad("bad_field", "seq", seq, "an int 0 <= seq < 2**63")
        if type(ts) is not int or not 0 <= ts < _INT63:
            _bad("bad_field", "ts", ts, "an int 0 <= ts < 2**63 (ns since the Unix epoch)")
        if type(length) is not int or length < 0:
            _bad("bad_field", "len", length, "an int >= 0")
        if type(expected_sum) is not int or not 0 <= expected_sum < _UINT64:
            _bad("bad_field", "sum", expected_sum, "an int 0 <= sum < 2**64")
        kind = fields.get("sumk", "xxh3")
        if type(kind) is not str or kind not in _CHECKSUMS:
            raise CodecError("bad_header", f"unknown checksum kind {_show(kind)}")
        meta = fields.get("meta")
        meta = {} if meta is None and "meta" not in fields else _check_meta(meta)
        if codec == "bytes":
            if "shape" in fields or "dtype" in fields:
                raise CodecError("bad_header", "a bytes payload has no shape or dtype")
            size = length
        else:
            name = fields["dtype"]
            if type(name) is not str or name not in _ITEMSIZE:
                _bad("bad_dtype", "dtype", name, f"one of {', '.join(sorted(SUPPORTED_DTYPES))}")
            shape = fields["shape"]
            size = _shape_bytes(shape, _ITEMSIZE[name])
            if codec == "raw" and length != size:
                raise CodecError("bad_shape", f"shape {_short(shape)} of {name} is {_size(size)} bytes, "
                                              f"len says {length}")
        if size > self.max_frame_bytes:
            raise FrameTooLarge("frame_too_large",
                                f"frame is {_size(size)} bytes, over the maximum of {self.max_frame_bytes}")
        if type(payload) not in _BUFFERS:
            raise CodecError("bad_payload", f"payload is a {type(payload).__name__}, not bytes")
        stored = memoryview(payload).nbytes
        if stored != length:
            reason = "truncated" if stored < length else "bad_length"
            raise CodecError(reason, f"payload is {stored} bytes, header says {length}")
        if _checksum(kind, payload) != expected_sum:
            raise CodecError("bad_checksum", "payload checksum does not match the header")
        data: Any = payload
        if codec != "bytes":
            raw = self._decompress(payload, size) if codec == "lz4" else payload
            try:
                data = np.frombuffer(raw, dtype=_LITTLE_ENDIAN[name]).reshape(shape)
            except (ValueError, TypeError) as exc:  # not reached from a stream: the sizes were checked
                raise CodecError("bad_payload", f"payload does not match the header ({_describe(exc)})") from exc
        return Frame(camera=camera, seq=seq, data=data, ts_ns=ts, meta=meta)

    @staticmethod
    def _decompress(payload: bytes | memoryview, size: int) -> bytes:
        """An LZ4 block whose size prefix must say ``size`` (checked before any memory is taken)."""
        if len(payload) < _LZ4_PREFIX:
            raise CodecError("bad_payload", f"lz4 payload of {len(payload)} bytes has no size prefix")
        prefix = int.from_bytes(payload[:_LZ4_PREFIX], "little")
        if prefix != size:
            raise CodecError("bad_shape", f"lz4 size prefix says {prefix} bytes, shape and dtype say {size}")
        try:
            raw: bytes = lz4.block.decompress(payload)
        except (lz4.block.LZ4BlockError, ValueError) as exc:
            raise CodecError("bad_payload", f"lz4 block does not decompress ({_describe(exc)})") from exc
        if len(raw) != size:
            raise CodecError("bad_payload", f"lz4 block decompressed to {len(raw)} bytes, expected {size}")
        return raw


# -- payload references (FRAME_BUFFER_PAYLOAD_STORE=shm; docs/wire-format.md section 9) ------------------------
#: A segment's name, ``seg-`` and 16 lowercase hex digits: nothing else, so a reference never names another path.
_SEGMENT_NAME = re.compile(r"seg-[0-9a-f]{16}")
SLOT_ALIGN = 64  # slots start on a cache line: any other offset is never a slot
MAX_REF_BYTES = 256  # a valid reference is under 50 bytes


@dataclass(frozen=True, slots=True)
class PayloadRef:
    """Where a payload lies in a shared-memory store: a claim check instead of the bytes.

    ``segment`` names a file of the stream's store directory, ``offset`` is the slot's start in it (its
    64-byte slot header, then the payload), ``length`` the payload's bytes, and ``generation`` the number
    the writer gave this use of the slot: a reference to a slot reused or never committed is refused, not
    read. The payload's checksum is the header's ``sum``, verified as for an inline payload.
    """

    segment: str
    offset: int
    length: int
    generation: int


def encode_ref(ref: PayloadRef) -> bytes:
    """The stream field ``r``: a msgpack array ``[segment, offset, length, generation]``."""
    return msgpack.packb([ref.segment, ref.offset, ref.length, ref.generation])  # type: ignore[no-any-return]


def decode_ref(raw: object) -> PayloadRef:
    """Decode a stream's ``r`` field; total: raises :class:`CodecError` ``bad_reference`` and nothing else."""
    if type(raw) not in _BUFFERS:
        raise CodecError("bad_reference", f"reference is a {type(raw).__name__}, not bytes")
    size = memoryview(raw).nbytes  # type: ignore[arg-type]
    if size > MAX_REF_BYTES:
        raise CodecError("bad_reference", f"reference is {size} bytes, more than {MAX_REF_BYTES}")
    try:
        fields = msgpack.unpackb(raw, raw=False, max_str_len=MAX_REF_BYTES, max_bin_len=MAX_REF_BYTES,
                                 max_array_len=MAX_REF_BYTES, max_map_len=MAX_REF_BYTES, max_ext_len=MAX_REF_BYTES)
    except Exception as exc:  # untrusted bytes: whatever the parser raises means "not a reference"
        raise CodecError("bad_reference", f"reference is not valid msgpack ({_describe(exc)})") from exc
    if type(fields) is not list or len(fields) != 4:
        raise CodecError("bad_reference", f"reference is {_show(fields)}, must be an array of 4 items")
    segment, offset, length, generation = fields
    if type(segment) is not str or not _SEGMENT_NAME.fullmatch(segment):
        _bad("bad_reference", "segment", segment, "'seg-' and 16 lowercase hex digits")
    if type(offset) is not int or not 0 <= offset < _INT63 or offset % SLOT_ALIGN:
        _bad("bad_reference", "offset", offset, f"an int 0 <= offset < 2**63, a multiple of {SLOT_ALIGN}")
    if type(length) is not int or not 0 <= length < _INT63:
        _bad("bad_reference", "length", length, "an int 0 <= length < 2**63")
    if type(generation) is not int or not 0 < generation < _UINT64:
        _bad("bad_reference", "generation", generation, "an int 0 < generation < 2**64")
    return PayloadRef(segment, offset, length, generation)

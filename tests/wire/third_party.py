"""A frame encoder and decoder written from docs/wire-format.md alone, as a third party would.

It imports nothing from ``frame_buffer`` (``test_third_party.py`` checks that): only msgpack, lz4.block, xxhash
and numpy. Section numbers refer to that page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lz4.block
import msgpack
import numpy as np
import xxhash

ITEMSIZE = {"uint8": 1, "uint16": 2, "float32": 4}  # section 4
REQUIRED = ("v", "cam", "seq", "ts", "codec", "len", "sum")  # section 6
META_TYPES = (str, int, float, bool, type(None))


class Rejected(Exception):
    """An entry that section 6 refuses, with its reason tag."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Decoded:
    camera: str
    seq: int
    ts_ns: int
    data: np.ndarray[Any, Any] | bytes
    meta: dict[str, Any] = field(default_factory=dict)


def encode(camera: str, seq: int, ts_ns: int, data: np.ndarray[Any, Any] | bytes, *, lz4_block: bool = False,
           meta: dict[str, Any] | None = None, sumk: str = "xxh3") -> tuple[bytes, bytes]:
    """Section 8: the header and payload of one frame."""
    header: dict[str, Any] = {"v": 1, "cam": camera, "seq": seq, "ts": ts_ns}
    if isinstance(data, np.ndarray):
        array = np.asarray(data, dtype=np.dtype(data.dtype.name).newbyteorder("<"))  # (ascontiguousarray: >= 1-d)
        raw = array.tobytes(order="C")
        payload = lz4.block.compress(raw, store_size=True) if lz4_block else raw
        header.update(codec="lz4" if lz4_block else "raw", shape=list(array.shape), dtype=array.dtype.name)
    else:
        payload = bytes(data)
        header["codec"] = "bytes"
    header.update(len=len(payload), sum=xxhash.xxh3_64_intdigest(payload, seed=0) if sumk == "xxh3" else 0,
                  sumk=sumk)
    if meta:
        header["meta"] = meta
    return msgpack.packb(header, use_bin_type=True), payload


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode(header: bytes | None, payload: bytes | None) -> Decoded:
    """Section 6 in full, then section 4 backwards; raises :class:`Rejected` with the reason tag."""
    if header is None:
        raise Rejected("missing_header", "no h")
    if payload is None:
        raise Rejected("missing_payload", "no p")
    if len(header) > 65536:
        raise Rejected("bad_header", "over 65536 bytes")
    try:
        fields = msgpack.unpackb(header, raw=False, strict_map_key=False)
    except Exception as exc:  # anything the parser says means: not msgpack, or bytes after the object
        raise Rejected("bad_header", f"not msgpack ({type(exc).__name__})") from exc
    if not isinstance(fields, dict):
        raise Rejected("bad_header", "not a map")
    if any(not isinstance(key, str) for key in fields):
        raise Rejected("bad_header", "a key is not a str")
    codec = fields.get("codec")
    array = codec in ("raw", "lz4")
    missing = [k for k in REQUIRED + (("shape", "dtype") if array else ()) if k not in fields]
    if missing:
        raise Rejected("missing_field", f"header lacks {', '.join(missing)}")
    if not (_int(fields["v"]) and fields["v"] == 1):
        raise Rejected("bad_version", repr(fields["v"]))
    if codec not in ("raw", "lz4", "bytes"):
        raise Rejected("bad_codec", repr(codec))
    cam, seq, ts, length, expected = (fields[k] for k in ("cam", "seq", "ts", "len", "sum"))
    if not (isinstance(cam, str) and 1 <= len(cam) <= 256):
        raise Rejected("bad_field", "cam")
    for name, value, limit in (("seq", seq, 2**63), ("ts", ts, 2**63), ("sum", expected, 2**64)):
        if not (_int(value) and 0 <= value < limit):
            raise Rejected("bad_field", name)
    if not (_int(length) and length >= 0):
        raise Rejected("bad_field", "len")
    sumk = fields.get("sumk", "xxh3")
    if sumk not in ("xxh3", "none") or not isinstance(sumk, str):
        raise Rejected("bad_header", "sumk")
    meta = fields.get("meta", {})
    if not isinstance(meta, dict) or any(
            not isinstance(k, str) or not isinstance(v, META_TYPES) for k, v in meta.items()):
        raise Rejected("bad_field", "meta")
    size = length
    if codec == "bytes":
        if "shape" in fields or "dtype" in fields:
            raise Rejected("bad_header", "bytes with shape or dtype")
    else:
        dtype, shape = fields["dtype"], fields["shape"]
        if not (isinstance(dtype, str) and dtype in ITEMSIZE):
            raise Rejected("bad_dtype", repr(dtype))
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_int(d) and 0 <= d < 2**31 for d in shape)):
            raise Rejected("bad_shape", repr(shape))
        size = int(np.prod(shape, dtype=object)) * ITEMSIZE[dtype]
        if codec == "raw" and length != size:
            raise Rejected("bad_shape", f"len {length}, shape says {size}")
    if len(payload) < length:
        raise Rejected("truncated", f"{len(payload)} < {length}")
    if len(payload) > length:
        raise Rejected("bad_length", f"{len(payload)} > {length}")
    if (xxhash.xxh3_64_intdigest(payload, seed=0) if sumk == "xxh3" else 0) != expected:
        raise Rejected("bad_checksum", "sum")
    if codec == "bytes":
        return Decoded(cam, seq, ts, payload, meta)
    raw = payload
    if codec == "lz4":
        if len(payload) < 4:
            raise Rejected("bad_payload", "no size prefix")
        if int.from_bytes(payload[:4], "little") != size:
            raise Rejected("bad_shape", "size prefix")
        try:
            raw = lz4.block.decompress(payload)
        except Exception as exc:
            raise Rejected("bad_payload", "lz4 block") from exc
        if len(raw) != size:
            raise Rejected("bad_payload", "decompressed size")
    array_out = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return Decoded(cam, seq, ts, array_out, meta)

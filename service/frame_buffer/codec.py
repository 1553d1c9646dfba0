"""Wire format: a small msgpack header plus the payload as a separate buffer.

Header and payload travel as two fields (two stream fields in Redis, header-in-properties in RabbitMQ)
so a frame is never concatenated or copied on the way out: an uncompressed array is sent straight from
its own memory. The header carries a format version, camera, seq, capture time, shape, dtype, codec,
payload length and a checksum of the payload as sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lz4.block
import msgpack
import numpy as np
import xxhash

from frame_buffer.errors import EXIT_CONFIG, FrameBufferError
from frame_buffer.frame import Frame

FORMAT_VERSION = 1
SUPPORTED_DTYPES = frozenset({"uint8", "uint16", "float32"})
# Lookups by dict: ``ndarray.dtype.name`` costs about 15 us per call in numpy 2, more than the rest of encode.
_NAME_OF = {np.dtype(name): name for name in SUPPORTED_DTYPES}
_LITTLE_ENDIAN = {name: np.dtype(name).newbyteorder("<") for name in SUPPORTED_DTYPES}
#: ``raw``: numpy bytes as-is; ``lz4``: numpy bytes LZ4-compressed; ``bytes``: an already-encoded payload.
PayloadCodec = Literal["raw", "lz4", "bytes"]
Checksum = Literal["xxh3", "none"]
_REQUIRED = ("v", "cam", "seq", "ts", "codec", "len", "sum")


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


def _checksum(kind: Checksum, payload: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(payload) if kind == "xxh3" else 0


class FrameCodec:
    """Encodes :class:`Frame` values to :class:`EncodedFrame` and back.

    Args:
        compress: try LZ4 on array payloads; kept only when it makes the frame smaller.
        checksum: ``xxh3`` (default, about 0.2 ms per Full HD frame here) or ``none`` to skip hashing.
            Decoding always verifies what the header says was used.
        max_frame_bytes: payloads larger than this are refused at encode time with :class:`FrameTooLarge`.
    """

    def __init__(
        self, *, compress: bool = False, checksum: Checksum = "xxh3", max_frame_bytes: int = 32 * 1024 * 1024
    ) -> None:
        if checksum not in ("xxh3", "none"):
            raise ValueError(f"checksum must be 'xxh3' or 'none', not {checksum!r}")
        self.compress = compress
        self.checksum: Checksum = checksum
        self.max_frame_bytes = max_frame_bytes

    def encode(self, frame: Frame) -> EncodedFrame:
        """Encode ``frame``; raises :class:`CodecError` for unsupported dtypes, :class:`FrameTooLarge`."""
        header: dict[str, Any] = {"v": FORMAT_VERSION, "cam": frame.camera, "seq": frame.seq, "ts": frame.ts_ns}
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
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            header["shape"] = list(array.shape)
            header["dtype"] = name
            payload = memoryview(array.data).cast("B") if array.ndim else memoryview(array.tobytes())
            codec: PayloadCodec = "raw"
            self._check_size(frame, payload.nbytes)
            if self.compress:
                packed = lz4.block.compress(payload, store_size=True)
                if len(packed) < payload.nbytes:
                    payload, codec = packed, "lz4"
        else:
            payload = frame.data
            codec = "bytes"
            self._check_size(frame, memoryview(payload).nbytes)
        header["codec"] = codec
        header["len"] = memoryview(payload).nbytes
        header["sum"] = _checksum(self.checksum, payload)
        header["sumk"] = self.checksum
        if frame.meta:
            header["meta"] = frame.meta
        return EncodedFrame(msgpack.packb(header), payload)

    def _check_size(self, frame: Frame, size: int) -> None:
        if size > self.max_frame_bytes:
            raise FrameTooLarge(
                "frame_too_large",
                f"frame {frame.camera}/{frame.seq} is {size} bytes, over the maximum of {self.max_frame_bytes}",
            )

    def decode(self, header: bytes | None, payload: bytes | memoryview | None) -> Frame:
        """Decode a header and payload; raises :class:`CodecError` naming what is wrong.

        The returned array is a read-only view of ``payload`` when it was sent uncompressed.
        """
        if header is None:
            raise CodecError("missing_header", "entry has no header field")
        if payload is None:
            raise CodecError("missing_payload", "entry has no payload field")
        try:
            fields = msgpack.unpackb(header)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CodecError("bad_header", f"header is not valid msgpack ({exc})") from exc
        if not isinstance(fields, dict):
            raise CodecError("bad_header", "header is not a msgpack map")
        missing = [key for key in _REQUIRED if key not in fields]
        if missing:
            raise CodecError("missing_field", f"header lacks {', '.join(missing)}")
        if fields["v"] != FORMAT_VERSION:
            raise CodecError("bad_version", f"format version {fields['v']!r}, this build reads {FORMAT_VERSION}")
        size = memoryview(payload).nbytes
        if size != fields["len"]:
            kind = "truncated" if size < fields["len"] else "bad_length"
            raise CodecError(kind, f"payload is {size} bytes, header says {fields['len']}")
        kind = fields.get("sumk", "xxh3")
        if kind not in ("xxh3", "none"):
            raise CodecError("bad_header", f"unknown checksum kind {kind!r}")
        if _checksum(kind, payload) != fields["sum"]:
            raise CodecError("bad_checksum", "payload checksum does not match the header")
        codec = fields["codec"]
        data: Any
        try:
            if codec == "bytes":
                data = payload
            elif codec in ("raw", "lz4"):
                dtype = _LITTLE_ENDIAN.get(fields.get("dtype"))  # type: ignore[arg-type]
                if dtype is None:
                    raise CodecError("bad_dtype", f"dtype {fields.get('dtype')!r} is not supported")
                raw = lz4.block.decompress(payload) if codec == "lz4" else payload
                data = np.frombuffer(raw, dtype=dtype)
                data = data.reshape(fields["shape"])
            else:
                raise CodecError("bad_codec", f"unknown payload codec {codec!r}")
        except CodecError:
            raise
        except (KeyError, ValueError, TypeError, lz4.block.LZ4BlockError) as exc:
            raise CodecError("bad_payload", f"payload does not match the header ({exc})") from exc
        return Frame(
            camera=str(fields["cam"]), seq=int(fields["seq"]), data=data, ts_ns=int(fields["ts"]),
            meta=dict(fields.get("meta") or {}),
        )

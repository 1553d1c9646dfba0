"""A reply reader for redis-py that receives frame payloads straight into their own buffer.

redis-py's pure-Python ``SocketBuffer`` copies a bulk reply four times on its way in: ``recv`` into a new
bytes object, that into a ``BytesIO`` (which regrows for every reply and is truncated after it), out of the
``BytesIO`` into another bytes object, and once more to cut the trailing CRLF. For a consumer of 640x480x3
frames that was most of its CPU, and it made the raw redis-py baseline the ceiling of this backend
(docs/performance.md has the measurements).

:class:`FrameSocketBuffer` keeps one reused ``bytearray`` for the small parts of a reply (type lines,
ids, field names, headers) and receives every bulk string of at least ``large_bulk`` bytes with
``recv_into`` straight into a ``bytearray`` of its own, returned as a read-only ``memoryview``: the kernel's
copy is the only one. The parser below is redis-py's own RESP2 parser with this buffer installed.

The interface is the one redis-py's parsers call (``read``, ``readline``, ``can_read``, ``get_pos``,
``rewind``, ``purge``, ``close``). One difference: a parse that fails after a large bulk was taken out of
the buffer cannot be rewound; the buffer then refuses every further read with a ``ConnectionError``.
redis-py disconnects after any failed read anyway (``disconnect_on_error``), so nothing depends on it.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from redis._parsers.resp2 import _RESP2Parser
from redis.exceptions import ConnectionError, TimeoutError
from redis.utils import SENTINEL

#: Bulk strings at least this long are received into their own buffer instead of the shared one.
LARGE_BULK = 32 * 1024
_SHRINK_FACTOR = 8
_CLOSED = "Connection closed by server."
_NOT_READY = (socket.timeout, BlockingIOError, ssl.SSLWantReadError)


class FrameSocketBuffer:
    """Drop-in for redis-py's ``SocketBuffer`` that does not copy large bulk strings.

    Args:
        sock: the connected socket.
        socket_read_size: bytes asked of each ``recv`` into the shared buffer.
        socket_timeout: the socket's own timeout, restored after a read with a timeout of its own.
        large_bulk: bulk strings of at least this many bytes get a buffer of their own.
    """

    def __init__(
        self, sock: socket.socket, socket_read_size: int, socket_timeout: float | None,
        large_bulk: int = LARGE_BULK,
    ) -> None:
        self._sock = sock
        self.socket_read_size = socket_read_size
        self.socket_timeout = socket_timeout
        self.large_bulk = large_bulk
        self._buf = bytearray(socket_read_size)
        self._pos = 0  # next unread byte in _buf
        self._end = 0  # end of the received bytes in _buf
        self._mark = 0  # where the current reply started: bytes from here on may still be rewound to
        self._dropped = 0  # bytes dropped from the front of _buf, so positions stay valid across compaction
        self._taken = False  # a large bulk left the buffer since the mark: the reply cannot be rewound
        self._broken = False

    # -- the socket -------------------------------------------------------------------------------------
    def _recv_into(self, view: memoryview, timeout: object, raise_on_timeout: bool = True) -> int:
        """One ``recv_into``; 0 when nothing arrived in time and ``raise_on_timeout`` is false."""
        if self._broken:
            raise ConnectionError("an interrupted reply left this connection unusable")
        if timeout is not SENTINEL:
            self._sock.settimeout(timeout)  # type: ignore[arg-type]
        try:
            received = self._sock.recv_into(view)
        except _NOT_READY:
            if raise_on_timeout:
                raise TimeoutError("Timeout reading from socket") from None
            return 0
        finally:
            if timeout is not SENTINEL:
                self._sock.settimeout(self.socket_timeout)
        if received == 0:
            raise ConnectionError(_CLOSED)
        return received

    def _fill(self, timeout: object = SENTINEL, raise_on_timeout: bool = True) -> bool:
        """Receive into the shared buffer, first making room for ``socket_read_size`` bytes."""
        if len(self._buf) - self._end < self.socket_read_size:
            keep = self._end - self._mark
            if self._mark and keep + self.socket_read_size <= len(self._buf):
                self._buf[:keep] = self._buf[self._mark:self._end]  # compact: drop what precedes the mark
            else:
                grown = bytearray(max(2 * len(self._buf), keep + self.socket_read_size))
                grown[:keep] = memoryview(self._buf)[self._mark:self._end]
                self._buf = grown
            self._dropped += self._mark
            self._pos -= self._mark
            self._end, self._mark = keep, 0
        received = self._recv_into(memoryview(self._buf)[self._end:], timeout, raise_on_timeout)
        self._end += received
        return received > 0

    # -- what redis-py's parsers call -------------------------------------------------------------------
    def can_read(self, timeout: float = 0) -> bool:
        """True when a reply (or a part of one) is waiting, in the buffer or on the socket."""
        return self._end > self._pos or self._fill(timeout, raise_on_timeout=False)

    def readline(self, timeout: object = SENTINEL) -> bytes:
        """The next line without its CRLF."""
        while (cr := self._buf.find(b"\r\n", self._pos, self._end)) < 0:
            self._fill(timeout)
        line = bytes(self._buf[self._pos:cr])
        self._pos = cr + 2
        return line

    def read(self, length: int, timeout: object = SENTINEL) -> bytes | memoryview:
        """A bulk string of ``length`` bytes (its CRLF consumed); large ones as a read-only memoryview."""
        wanted = length + 2
        if length >= self.large_bulk and self._end - self._pos < wanted:
            return self._read_large(length, timeout)
        while self._end - self._pos < wanted:
            self._fill(timeout)
        start = self._pos
        self._pos += wanted
        return bytes(memoryview(self._buf)[start:start + length])

    def _read_large(self, length: int, timeout: object) -> memoryview:
        out = memoryview(bytearray(length + 2))
        have = self._end - self._pos
        out[:have] = memoryview(self._buf)[self._pos:self._end]
        # The reply can no longer be rewound, so nothing before this point needs keeping.
        self._pos = self._mark = self._end
        self._taken = True
        while have < len(out):
            have += self._recv_into(out[have:], timeout)
        return out[:length].toreadonly()

    def get_pos(self) -> int:
        """Mark the start of a reply and return its position, for :meth:`rewind`."""
        self._mark, self._taken = self._pos, False
        return self._dropped + self._pos

    def rewind(self, pos: int) -> None:
        """Go back to the start of a reply whose parsing failed."""
        if self._taken:
            self._broken = True  # its large bulks are gone; reading on would start mid-reply
            return
        self._pos = pos - self._dropped

    def purge(self) -> None:
        """Forget the reply just parsed; reuse the buffer from its start when nothing else is waiting."""
        if self._pos == self._end:
            self._dropped += self._pos
            self._pos = self._end = 0
            if len(self._buf) > _SHRINK_FACTOR * self.socket_read_size:
                self._buf = bytearray(self.socket_read_size)  # one large reply should not pin memory
        self._mark = self._pos

    def close(self) -> None:
        """Release the buffer."""
        self._buf = bytearray()
        self._pos = self._end = self._mark = 0


class FrameRESP2Parser(_RESP2Parser):
    """redis-py's RESP2 parser reading through :class:`FrameSocketBuffer`.

    RESP2, not RESP3: its replies have the same shape in every redis-py release this project supports.
    """

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)  # type: ignore[no-untyped-call]
        self._buffer = FrameSocketBuffer(connection._sock, self.socket_read_size, connection.socket_timeout)

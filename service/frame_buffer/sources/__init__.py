"""Frame sources: ``synthetic`` (moving test pattern), ``file`` and ``rtsp`` (PyAV).

A source is given as ``kind:camera[:option=value...]``, for example ``synthetic:cam0:fps=30:size=640x480``,
``file:cam1:path=/videos/a.mp4:loop=true`` or ``rtsp:cam2:url=rtsp://host:8554/live``.

Every option is checked when the spec is parsed (an unknown option or a wrong value is a
:class:`~frame_buffer.errors.ConfigError` naming the source), so a mistake stops the start with one line
instead of killing the source's thread later; :func:`probe_source` then opens files and streams once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from frame_buffer.checks import masked_url
from frame_buffer.errors import ConfigError

if TYPE_CHECKING:
    from frame_buffer.sources.synthetic import SyntheticSource
    from frame_buffer.sources.video import VideoSource

#: The options each kind takes; any other is refused.
OPTIONS = {"synthetic": ("fps", "size"), "file": ("path", "loop"), "rtsp": ("url",)}
#: Largest width or height of a synthetic frame.
MAX_SIDE = 16384
#: Largest synthetic frame (width * height * 3 bytes); the source keeps 16 of them precomputed.
MAX_SYNTHETIC_FRAME_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """A parsed and checked source description."""

    kind: str
    camera: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``kind:camera``, how messages name the source."""
        return f"{self.kind}:{self.camera}"

    @property
    def location(self) -> str:
        """The file path or the url (password masked) of a video source; empty for a synthetic one."""
        return masked_url(self.options.get("url", "")) or self.options.get("path", "")

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Parse and check ``kind:camera[:key=value...]``; the ``url`` option may itself contain colons."""
        kind, _, rest = text.partition(":")
        camera, _, rest = rest.partition(":")
        if kind not in OPTIONS or not camera:
            raise ConfigError(f"FRAME_BUFFER_SOURCES: {text!r} is not kind:camera[:key=value...] "
                              "with kind synthetic, file or rtsp")
        options: dict[str, str] = {}
        while rest:
            key, equals, value = rest.partition("=")
            if not equals:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: source {kind}:{camera}: option {key!r} is not key=value")
            if key == "url":  # everything after url= belongs to it
                rest = ""
            else:
                value, _, rest = value.partition(":")
            if key in options:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: source {kind}:{camera}: option {key} given twice")
            options[key] = value
        spec = cls(kind, camera, options)
        spec.check()
        return spec

    def check(self) -> None:
        """Every option known to this kind and valid; the required ones there."""
        known = OPTIONS[self.kind]
        for key in self.options:
            if key not in known:
                raise self._error(f"unknown option {key!r}; {self.kind} takes {', '.join(known)}")
        if self.kind == "synthetic":
            fps = self.options.get("fps", "30")
            try:
                rate = float(fps)
            except ValueError:
                rate = -1.0
            if not (math.isfinite(rate) and rate >= 0):
                raise self._error(f"fps: must be a number >= 0 (0: as fast as possible), got {fps!r}")
            size = self.options.get("size", "640x480")
            try:
                height, width = parse_size(size)
            except ConfigError as exc:
                raise self._error(str(exc)) from None
            if width * height * 3 > MAX_SYNTHETIC_FRAME_BYTES:
                raise self._error(f"size: {size} makes frames of {width * height * 3} bytes, more than "
                                  f"{MAX_SYNTHETIC_FRAME_BYTES}")
        elif self.kind == "file":
            if not self.options.get("path"):
                raise self._error("needs path=FILE")
            if self.options.get("loop", "false") not in ("true", "false"):
                raise self._error(f"loop: must be true or false, got {self.options['loop']!r}")
        else:
            url = self.options.get("url", "")
            if not url:
                raise self._error("needs url=rtsp://HOST[:PORT]/PATH")
            if not url.startswith(("rtsp://", "rtsps://")):
                raise self._error(f"url: must start with rtsp:// or rtsps://, got {masked_url(url)!r}")

    def _error(self, message: str) -> ConfigError:
        return ConfigError(f"FRAME_BUFFER_SOURCES: source {self.name}: {message}")


def parse_size(text: str) -> tuple[int, int]:
    """``640x480`` -> (480, 640) rows and columns; each side 1 to :data:`MAX_SIDE`."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size: must be WIDTHxHEIGHT, got {text!r}") from None
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ConfigError(f"size: width and height must be 1 to {MAX_SIDE}, got {text!r}")
    return height, width


def open_source(spec: SourceSpec, stop: threading.Event | None = None,
                beat: Callable[[], None] | None = None) -> SyntheticSource | VideoSource:
    """The source ``spec`` describes, an iterable of frames that ends when ``stop`` is set (or the file ends).

    ``beat`` is called at least every few seconds while the source waits on purpose (pacing, reconnect
    backoff), so that a supervisor can tell a waiting source from a stuck one.
    """
    stop = stop or threading.Event()
    if spec.kind == "synthetic":
        from frame_buffer.sources.synthetic import SyntheticSource

        return SyntheticSource(spec.camera, fps=float(spec.options.get("fps", "30")),
                               shape=(*parse_size(spec.options.get("size", "640x480")), 3), stop=stop, beat=beat)
    from frame_buffer.sources.video import VideoSource

    location = spec.options.get("url") or spec.options["path"]
    return VideoSource(spec.camera, location, live=spec.kind == "rtsp",
                       loop=spec.options.get("loop", "false") == "true", stop=stop, beat=beat)


def probe_source(spec: SourceSpec) -> str | None:
    """Open ``spec`` once before the service starts.

    Raises ConfigError (naming the source, its location and the reason) for a file that is missing or cannot
    be decoded, and for an RTSP server that answered with a refusal (404, 401, ...). Returns the reason when an
    RTSP camera does not answer at all: a camera may be rebooting, so the service starts, reconnects with
    backoff and shows the reason in /readyz. None when the source opened.
    """
    if spec.kind == "synthetic":
        return None
    from frame_buffer.sources.video import probe

    return probe(spec.name, spec.options.get("url") or spec.options["path"], live=spec.kind == "rtsp")


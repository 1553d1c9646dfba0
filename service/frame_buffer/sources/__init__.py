"""Frame sources: ``synthetic`` (moving test pattern), ``file`` and ``rtsp`` (PyAV).

A source is given as ``kind:camera[:option=value...]``, for example ``synthetic:cam0:fps=30:size=640x480``,
``file:cam1:path=/videos/a.mp4:loop=true`` or ``rtsp:cam2:url=rtsp://host:8554/live``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from frame_buffer.config import ConfigError
from frame_buffer.frame import Frame


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source description."""

    kind: str
    camera: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Parse ``kind:camera[:key=value...]``; the ``url`` option may itself contain colons."""
        kind, _, rest = text.partition(":")
        camera, _, rest = rest.partition(":")
        if kind not in ("synthetic", "file", "rtsp") or not camera:
            raise ConfigError(f"FRAME_BUFFER_SOURCES: {text!r} is not kind:camera[:key=value...] "
                              "with kind synthetic, file or rtsp")
        options: dict[str, str] = {}
        while rest:
            key, _, value = rest.partition("=")
            if key == "url":  # everything after url= belongs to it
                options["url"] = value
                break
            value, _, rest = value.partition(":")
            options[key] = value
        return cls(kind, camera, options)


def parse_size(text: str) -> tuple[int, int]:
    """``640x480`` -> (480, 640) rows and columns."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size: must be WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise ConfigError(f"size: must be positive, got {text!r}")
    return height, width


def open_source(spec: SourceSpec) -> Iterator[Frame]:
    """An iterator of frames for ``spec``; runs until the source ends (or forever)."""
    if spec.kind == "synthetic":
        from frame_buffer.sources.synthetic import SyntheticSource

        return iter(SyntheticSource(
            spec.camera, fps=float(spec.options.get("fps", "30")),
            shape=(*parse_size(spec.options.get("size", "640x480")), 3),
        ))
    from frame_buffer.sources.video import VideoSource

    location = spec.options.get("url") or spec.options.get("path")
    if not location:
        raise ConfigError(f"FRAME_BUFFER_SOURCES: {spec.kind} source {spec.camera} needs url= or path=")
    return iter(VideoSource(spec.camera, location, live=spec.kind == "rtsp",
                            loop=spec.options.get("loop", "false") == "true"))

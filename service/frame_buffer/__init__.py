"""frame_buffer: a lossless buffer for video frames between camera ingest and analysis workers."""

from frame_buffer.codec import CodecError, FrameCodec
from frame_buffer.frame import Frame

__all__ = ["CodecError", "Frame", "FrameCodec"]
__version__ = "0.1.0"

"""A live H.264 RTSP stream for tests, served by GStreamer's RTSP server.

Run with Debian's own ``/usr/bin/python3`` (it has the GObject bindings): ``rtsp_server.py PORT [FPS]``.
Serves ``rtsp://127.0.0.1:PORT/live`` (320x240, moving test pattern) and prints ``ready`` when listening.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, fps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={fps}/1 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()

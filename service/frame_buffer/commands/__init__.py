"""The subcommands of ``frame-buffer``: one module each, registered by :mod:`frame_buffer.cli`.

Commands sit above the library (frame, codec, queue, flow, sources, the service runtime) and only import from
it; nothing in the library imports a command. What the commands share is in :mod:`.common`.
"""

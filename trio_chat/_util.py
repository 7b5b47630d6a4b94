"""Small helpers shared by the trio layers (handler and serving)."""

from __future__ import annotations

import trio


def peer_name(stream: trio.abc.Stream | None) -> str:
    """A printable peer address for log messages (``"?"`` when the stream has none)."""
    # SSLStream and other wrappers keep the socket stream in .transport_stream.
    while stream is not None and not hasattr(stream, "socket"):
        stream = getattr(stream, "transport_stream", None)
    sock = getattr(stream, "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
    except OSError:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "?"

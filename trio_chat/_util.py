"""Small helpers shared by the trio layers (handler and serving)."""

from __future__ import annotations

import trio


def _peer_address(stream: trio.abc.Stream | None) -> object:
    """The stream's ``getpeername()`` result, or None when it has no connected socket."""
    # SSLStream and other wrappers keep the socket stream in .transport_stream.
    while stream is not None and not hasattr(stream, "socket"):
        stream = getattr(stream, "transport_stream", None)
    sock = getattr(stream, "socket", None)
    try:
        return sock.getpeername() if sock is not None else None
    except OSError:
        return None


def peer_name(stream: trio.abc.Stream | None) -> str:
    """A printable peer address for log messages (``"?"`` when the stream has none)."""
    peer = _peer_address(stream)
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"  # IPv6: [::1]:80
    return str(peer) if peer else "?"


def peer_host(stream: trio.abc.Stream | None) -> str | None:
    """The peer's IP address without the port, or None when it has none (Unix sockets, memory
    streams): the key of the per-peer connection limit."""
    peer = _peer_address(stream)
    if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[0], str) and peer[0]:
        return peer[0]
    return None

"""What serving does with one connection's stream: name its peer, bound its waits (for trio-style
handlers), close it without a reset, and tell the peer's own breakage from a handler's."""

from __future__ import annotations

import math
import socket
from typing import Any, Final

import trio

__all__ = [
    "GRACEFUL_CLOSE_TIMEOUT",
    "close_gracefully",
    "describe_peer",
    "raised_by",
    "socket_of",
    "with_idle_timeout",
]

# How long a graceful close may take: sending the end of output (a FIN, a TLS close_notify) and
# reading what the peer still sends until its own end. Longer than a loopback or LAN round trip
# by far, short enough not to hold up a server that shuts down. (The core bounds its own graceful
# close the same way.)
GRACEFUL_CLOSE_TIMEOUT: Final = 2.0

# What a graceful close reads and throws away at most, waiting for the peer's end of input: a
# peer that keeps sending gets a reset after that much rather than holding the connection.
_DRAIN_BUDGET: Final = 1024 * 1024


def socket_of(stream: trio.abc.Stream | None) -> Any:
    """The socket under *stream* (through TLS and other wrappers), or None."""
    # SSLStream and other wrappers keep the stream they wrap in .transport_stream.
    while stream is not None and not hasattr(stream, "socket"):
        stream = getattr(stream, "transport_stream", None)
    return getattr(stream, "socket", None)


def describe_peer(stream: trio.abc.Stream) -> tuple[str, str | None]:
    """The peer of a stream just accepted: a name for log lines (``127.0.0.1:5000``,
    ``[::1]:5000``) and its IP address (None without one: Unix sockets, memory streams).

    Called right after ``accept()``, before anything else can run: a peer that already reset
    its connection has no address left to ask for, and is named as such.
    """
    sock = socket_of(stream)
    if sock is None:
        return "?", None
    try:
        address = sock.getpeername()
    except OSError:
        return "(a peer that reset its connection before it was accepted)", None
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
        host, port = address[0], address[1]
        return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), host
    # A Unix socket's peer is usually unnamed (""): say what it is.
    return (str(address) if address else "(Unix socket peer)"), None


def stream_is_closed(stream: trio.abc.Stream) -> bool:
    """Whether the socket under *stream* is closed (False when there is none to ask)."""
    sock = socket_of(stream)
    if sock is None:
        return False
    fileno = getattr(sock, "fileno", None)
    return callable(fileno) and fileno() == -1


def raised_by(exc: BaseException, streams: tuple[object, ...]) -> bool:
    """Whether *exc* was raised inside a method of one of *streams* (its traceback says).

    How serving tells the peer's own reset (``trio.BrokenResourceError`` from this connection's
    stream, however deep in the handler's code it was awaited) from one that user code raised
    from another stream (a broken backend connection: a handler error).
    """
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and any(owner is stream for stream in streams):
            return True
        tb = tb.tb_next
    return False


async def close_gracefully(stream: trio.abc.Stream) -> None:
    """Close *stream* so that the peer sees everything sent, then an end of input, not a reset.

    Closing a TCP socket with unread input makes the kernel answer with a reset, which throws
    away the replies still on their way to the peer. So: send the end of output (``send_eof()``
    where the stream can half-close), read and discard until the peer's own end (bounded by
    :data:`GRACEFUL_CLOSE_TIMEOUT` and a byte budget), then close. Whatever fails or runs out of
    time, the stream ends up closed.
    """
    if stream_is_closed(stream):
        return
    with trio.move_on_after(GRACEFUL_CLOSE_TIMEOUT):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
                budget = _DRAIN_BUDGET
                while budget > 0 and (data := await stream.receive_some(65536)):
                    budget -= len(data)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass  # the peer went away first, or the handler left a task using the stream
        else:
            return
    await trio.aclose_forcefully(stream)


class IdleTimeoutStream(trio.abc.Stream):
    """The stream a trio-style handler gets when the server was given an ``idle_timeout``.

    Every ``receive_some``, ``send_all`` and ``wait_send_all_might_not_block`` that waits longer
    than *idle_timeout* seconds for the peer closes the connection and raises
    :class:`trio.TooSlowError` (serving logs it at info level, as ``AsyncChat``'s own
    ``idle_timeout``). Other attributes (``socket``, ``setsockopt``, ``getpeercert``...) are the
    wrapped stream's.
    """

    def __init__(self, transport_stream: trio.abc.Stream, idle_timeout: float) -> None:
        self.transport_stream = transport_stream
        self.idle_timeout = idle_timeout
        self.expired: trio.TooSlowError | None = None  # the error, once the timeout struck

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport_stream, name)

    async def _expire(self, what: str) -> trio.TooSlowError:
        if self.expired is None:
            self.expired = trio.TooSlowError(
                f"the peer neither sent nor read anything for {self.idle_timeout} seconds "
                f"while the handler waited in {what}() (idle_timeout)"
            )
            # A write cut short leaves the stream in no state to go on: close it.
            await trio.aclose_forcefully(self.transport_stream)
        return self.expired

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.expired is None:
            with trio.move_on_after(self.idle_timeout):
                return await self.transport_stream.receive_some(max_bytes)
        raise await self._expire("receive_some")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.expired is None:
            with trio.move_on_after(self.idle_timeout):
                await self.transport_stream.send_all(data)
                return
        raise await self._expire("send_all")

    async def wait_send_all_might_not_block(self) -> None:
        if self.expired is None:
            with trio.move_on_after(self.idle_timeout):
                await self.transport_stream.wait_send_all_might_not_block()
                return
        raise await self._expire("wait_send_all_might_not_block")

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


class HalfCloseableIdleTimeoutStream(IdleTimeoutStream, trio.abc.HalfCloseableStream):
    """:class:`IdleTimeoutStream` over a stream that can half-close (a TCP connection)."""

    transport_stream: trio.abc.HalfCloseableStream

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()


def with_idle_timeout(stream: trio.abc.Stream, idle_timeout: float | None) -> trio.abc.Stream:
    """*stream*, or a wrapper that bounds each of its waits by *idle_timeout* seconds."""
    if idle_timeout is None or math.isinf(idle_timeout):
        return stream
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return HalfCloseableIdleTimeoutStream(stream, idle_timeout)
    return IdleTimeoutStream(stream, idle_timeout)


def is_unix_socket(stream: trio.abc.Stream) -> bool:
    """Whether *stream* runs over a Unix socket (its peer has no IP address)."""
    sock = socket_of(stream)
    family = getattr(sock, "family", None)
    return hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX

"""The client side: open a TCP (optionally TLS) connection and run a handler on it."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TypeVar

import trio

from ._chat import AsyncChat

__all__ = ["connect_tcp"]

# The handler's own type: connect_tcp(Client(), ...) returns a Client.
HandlerT = TypeVar("HandlerT", bound=AsyncChat)


async def connect_tcp(
    handler: HandlerT | Callable[[trio.abc.Stream], HandlerT],
    host: str | bytes,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    task_status: trio.TaskStatus[HandlerT] = trio.TASK_STATUS_IGNORED,
) -> HandlerT:
    """Connect to *host*:*port*, then run a handler on the connection until it closes.

    With ``handler = await nursery.start(connect_tcp, ...)`` it returns to the caller once the
    connection (and the TLS handshake) succeeded, and goes on running in *nursery*: connection
    errors reach the caller, and the caller can :meth:`~AsyncChat.push` to the handler.
    Awaited directly, it returns when the connection is closed.

    Unlike the server side, the handler's exceptions propagate: a client wants to know.

    Args:
        handler: an :class:`AsyncChat` created without a stream, or a factory called with the
            connected stream (an ``AsyncChat`` subclass qualifies).
        host: the host name or IP address to connect to (see :func:`trio.open_tcp_stream`).
        port: the port to connect to.
        ssl_context: speak TLS with this context (e.g. :func:`ssl.create_default_context`);
            the handshake is completed before the handler starts. None: plain TCP.
        server_hostname: the name to check the server's certificate against and to send in
            SNI; default: *host*.
        task_status: receives the handler once connected.

    Returns:
        The handler, after its connection closed.

    Raises:
        OSError: the connection could not be opened.
        trio.BrokenResourceError: the TLS handshake failed (the :class:`ssl.SSLError`, e.g. a
            certificate that does not verify, is its ``__cause__``).
    """
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if ssl_context is not None:
            if server_hostname is None:
                server_hostname = host.decode("ascii") if isinstance(host, bytes) else host
            tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname)
            await tls.do_handshake()
            stream = tls
        chat = handler if isinstance(handler, AsyncChat) else handler(stream)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    task_status.started(chat)
    await chat.run(stream if chat.stream is None else None)
    return chat

"""Serving: run one ``AsyncChat`` per accepted connection, isolated from the others.

Mirrors ``trio.serve_tcp`` / ``trio.serve_listeners``, with one deliberate difference: an exception
in one connection's handler is logged and closes that connection only, where trio's helpers let
it crash the whole server. On top of trio's helpers it adds limits (connections in all and per
peer address, idle time, output queued for a slow reader), TLS, and a graceful shutdown.

Task layout of one server::

    serve_listeners()             returns after a graceful shutdown, else runs until cancelled
    ├── accepting                 a nursery, cancelled when the shutdown_event is set
    │   ├── accept loop           one per listener: wait for a free slot, accept, admit
    │   └── shutdown watcher      waits for shutdown_event
    └── connections               our nursery, or the caller's handler_nursery
        └── connection            one per stream, in a CancelScope of its own:
                                  TLS handshake, handler_factory(stream), await handler.run()
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import attrs
import trio

from ._chat import AsyncChat
from ._exceptions import FrameTooLongError, IncompleteFrameError
from ._util import peer_host, peer_name

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "HandlerFactory",
    "serve_listeners",
    "serve_tcp",
]

logger: Final = logging.getLogger("trio_chat")

#: Makes the handler of one connection from its stream; an ``AsyncChat`` subclass qualifies.
HandlerFactory = Callable[[trio.abc.Stream], AsyncChat]

# The listeners' own type, handed back by task_status.started(), as trio.serve_listeners does.
ListenerT = TypeVar("ListenerT", bound=trio.abc.Listener[Any])

# 1,000 connections: below the usual soft limit of 1,024 open files (``ulimit -n``), so a server
# left at the defaults pauses cleanly instead of failing accept() with EMFILE; and with the
# ~400 KiB one connection holds at most by itself (one 64 KiB read + out_high_water 256 KiB +
# max_frame_size 64 KiB, see the design page) it bounds the handlers' memory to ~400 MiB.
DEFAULT_MAX_CONNECTIONS: Final = 1000

# 50 per address: Postfix's smtpd_client_connection_count_limit, a twentieth of the default
# max_connections, so one client (or one NAT gateway) cannot take the whole server, while a
# browser-like client (6 per host) or a busy relay stays far below it.
DEFAULT_MAX_CONNECTIONS_PER_PEER: Final = 50

# 5 seconds: half of `docker stop`'s 10 s before SIGKILL, so the cancel-and-close step that
# follows still runs; Kubernetes (30 s) and systemd (90 s) allow more if a caller wants it.
DEFAULT_GRACE_PERIOD: Final = 5.0

# 10 seconds: a handshake is two round trips, well under a second even across continents;
# ten covers a congested mobile link many times over, and bounds how long a peer that connects
# and sends nothing holds a connection slot. (asyncio allows 60 s; nginx's client timeouts 60 s.)
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 10.0

# accept() errors that mean "the system is overloaded, try again soon" (trio's own list) and how
# long to wait before trying again: long enough for a few connections to close, short enough
# that a recovered server does not leave its backlog waiting.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_RETRY_DELAY: Final = 0.1


class _Keep(enum.Enum):
    """The default of the per-handler overrides: keep the handler's own value."""

    KEEP = "KEEP"

    def __repr__(self) -> str:  # how signatures show the default
        return "KEEP"


_KEEP: Final = _Keep.KEEP


@attrs.define(eq=False, kw_only=True)
class _Server:
    """The state of one serve_listeners() call: options, slots, and the open connections."""

    handler_factory: HandlerFactory
    ssl_context: ssl.SSLContext | None
    tls_handshake_timeout: float | None
    max_connections_per_peer: int | None
    idle_timeout: float | _Keep | None
    max_queued_bytes: int | _Keep | None
    # One token per open connection: accepting pauses while none is free.
    slots: trio.CapacityLimiter | None
    per_peer: dict[str, int] = attrs.field(factory=dict)
    # The cancel scope of each open connection, for the end of a graceful shutdown.
    connections: set[trio.CancelScope] = attrs.field(factory=set)
    all_closed: trio.Event | None = None  # set when the last open connection is gone

    # ------------------------------------------------------------ accepting

    async def accept_loop(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                # Wait for a free slot without holding it while accept() waits: with several
                # listeners (IPv4 and IPv6), an idle one must not keep the last slot from a busy
                # one. The slot is taken after accept(), in admit().
                await self.wait_for_free_slot()
                stream = await self.accept(listener)
                await self.admit(stream, nursery)

    async def wait_for_free_slot(self) -> None:
        if self.slots is None or self.slots.available_tokens >= 1:
            return
        logger.info(
            "max_connections=%d reached: accepting paused until a connection closes",
            self.slots.total_tokens,
        )
        probe = object()
        await self.slots.acquire_on_behalf_of(probe)
        self.slots.release_on_behalf_of(probe)
        logger.info("accepting resumed")

    async def accept(self, listener: trio.abc.Listener[Any]) -> trio.abc.Stream:
        while True:
            try:
                stream: trio.abc.Stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                code = exc.errno
            else:
                return stream
            logger.error(
                "accept() failed with %s (%s); retrying in %s seconds",
                errno.errorcode[code],
                os.strerror(code),
                _ACCEPT_RETRY_DELAY,
            )
            await trio.sleep(_ACCEPT_RETRY_DELAY)

    async def admit(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        """Refuse *stream* if its peer has too many connections, else start its task."""
        peer = peer_name(stream)  # kept: after the close, getpeername() fails
        host = peer_host(stream)
        limit = self.max_connections_per_peer
        if host is not None and limit is not None:
            open_from_host = self.per_peer.get(host, 0)
            if open_from_host >= limit:
                logger.warning(
                    "refusing connection from %s: %d connections from %s are open "
                    "(max_connections_per_peer=%d)",
                    peer,
                    open_from_host,
                    host,
                    limit,
                )
                await trio.aclose_forcefully(stream)
                return
            self.per_peer[host] = open_from_host + 1
        scope = trio.CancelScope()
        slot: object | None = None  # the connection's token of self.slots, once it holds one
        try:
            if self.slots is not None:
                # At once, unless another listener's connection took the slot we waited for.
                token = object()
                await self.slots.acquire_on_behalf_of(token)
                slot = token
            self.connections.add(scope)
            logger.debug("accepted connection from %s (%d open)", peer, len(self.connections))
            nursery.start_soon(
                self.connection, stream, peer, host, slot, scope, name=f"trio_chat {peer}"
            )
        except BaseException:  # cancelled, or the handler_nursery is closed: undo, close
            self.forget(host, slot, scope)
            await trio.aclose_forcefully(stream)
            raise

    def forget(self, host: str | None, slot: object | None, scope: trio.CancelScope) -> None:
        """Undo what admit() counted for one connection."""
        if self.slots is not None and slot is not None:
            self.slots.release_on_behalf_of(slot)
        if host is not None and host in self.per_peer:
            self.per_peer[host] -= 1
            if not self.per_peer[host]:
                del self.per_peer[host]
        self.connections.discard(scope)
        if not self.connections and self.all_closed is not None:
            self.all_closed.set()
            self.all_closed = None

    # ---------------------------------------------------------- connections

    async def connection(
        self,
        stream: trio.abc.Stream,
        peer: str,
        host: str | None,
        slot: object | None,
        scope: trio.CancelScope,
    ) -> None:
        """One connection's task: its failures are logged here and go no further."""
        # The handler runs in this frame rather than in a helper coroutine: an idle connection
        # costs about 9 KiB, and each frame that stays on its stack is a few hundred bytes.
        try:
            with scope:
                try:
                    handler_stream = stream
                    if self.ssl_context is not None:
                        tls = await self.handshake(stream, peer)
                        if tls is None:
                            return
                        handler_stream = tls
                    handler = self.make_handler(handler_stream)
                    # A factory may build its handler without the stream; run() then takes it.
                    await handler.run(handler_stream if handler.stream is None else None)
                except trio.BrokenResourceError as exc:
                    logger.debug("connection from %s broken: %r", peer, exc)
                except (FrameTooLongError, IncompleteFrameError) as exc:
                    # The peer broke the protocol; no traceback: nothing here is a bug.
                    name = type(exc).__name__
                    logger.warning("closing connection from %s: %s: %s", peer, name, exc)
                except Exception:
                    logger.exception("handler for connection from %s failed; closing it", peer)
            if scope.cancelled_caught:
                logger.debug("connection from %s cancelled by the server's shutdown", peer)
        finally:
            # The handler's run() already closed it, unless the factory or the handshake failed.
            await trio.aclose_forcefully(stream)
            self.forget(host, slot, scope)
            logger.debug("connection from %s closed", peer)

    def make_handler(self, stream: trio.abc.Stream) -> AsyncChat:
        handler = self.handler_factory(stream)
        if not isinstance(handler, AsyncChat):
            raise TypeError(
                f"handler_factory must return an AsyncChat, not {type(handler).__name__!r}"
            )
        # Set on the instance, after __init__: they override the class attributes.
        if self.idle_timeout is not _KEEP:
            handler.idle_timeout = self.idle_timeout
        if self.max_queued_bytes is not _KEEP:
            handler.max_queued_bytes = self.max_queued_bytes
        return handler

    async def handshake(self, stream: trio.abc.Stream, peer: str) -> trio.SSLStream[Any] | None:
        """The server side of a TLS handshake, bounded in time; None (logged) if it failed."""
        assert self.ssl_context is not None
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
        timeout = self.tls_handshake_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as handshake:
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                logger.info("TLS handshake with %s failed: %s", peer, exc.__cause__ or exc)
                return None
        if handshake.cancelled_caught:
            logger.info("TLS handshake with %s timed out after %s seconds", peer, timeout)
            return None
        return tls

    # ------------------------------------------------------------- shutdown

    async def drain(self, grace_period: float) -> None:
        """Wait up to *grace_period* seconds for the open connections, then cancel the rest."""
        if not self.connections:
            return
        logger.info(
            "stopped accepting; waiting up to %s seconds for %d open connection(s)",
            grace_period,
            len(self.connections),
        )
        with trio.move_on_after(grace_period):
            await self.wait_all_closed()
        if self.connections:
            logger.info("grace period over: cancelling %d connection(s)", len(self.connections))
            for scope in self.connections:
                scope.cancel()
            await self.wait_all_closed()

    async def wait_all_closed(self) -> None:
        while self.connections:
            if self.all_closed is None:
                self.all_closed = trio.Event()
            await self.all_closed.wait()


async def _stop_on(event: trio.Event, accepting: trio.CancelScope) -> None:
    await event.wait()
    logger.info("shutdown requested: closing the listeners")
    accepting.cancel()


def _check_limit(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, not {type(value).__name__!r}")
    if value < 0 or (value == 0 and not allow_zero) or math.isnan(value):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {least} (or None for no limit), not {value!r}")


def _check_options(
    *,
    max_connections: int | None,
    max_connections_per_peer: int | None,
    idle_timeout: float | _Keep | None,
    max_queued_bytes: int | _Keep | None,
    grace_period: float,
    tls_handshake_timeout: float | None,
) -> None:
    _check_limit("max_connections", max_connections)
    if max_connections is not None and not isinstance(max_connections, int):
        raise TypeError(f"max_connections must be an int, not {type(max_connections).__name__!r}")
    _check_limit("max_connections_per_peer", max_connections_per_peer)
    if idle_timeout is not _KEEP:
        _check_limit("idle_timeout", idle_timeout)
    if max_queued_bytes is not _KEEP:
        _check_limit("max_queued_bytes", max_queued_bytes, allow_zero=True)
    _check_limit("grace_period", grace_period, allow_zero=True)
    _check_limit("tls_handshake_timeout", tls_handshake_timeout)


async def serve_listeners(
    handler_factory: HandlerFactory,
    listeners: Sequence[ListenerT],
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[ListenerT]] = trio.TASK_STATUS_IGNORED,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_peer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    idle_timeout: float | _Keep | None = _KEEP,
    max_queued_bytes: int | _Keep | None = _KEEP,
    shutdown_event: trio.Event | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> None:
    """Accept connections on *listeners*, running ``handler_factory(stream).run()`` for each.

    Like :func:`trio.serve_listeners`: it closes the listeners when it ends, runs each connection
    in a task of its own (in *handler_nursery* if given), and calls
    ``task_status.started(listeners)``, so ``await nursery.start(serve_listeners, ...)`` returns
    the listeners. It runs until cancelled, or until a graceful shutdown (see *shutdown_event*).

    Args:
        handler_factory: called with each accepted stream (wrapped in TLS if *ssl_context* is
            given); returns the connection's :class:`AsyncChat`. The class itself qualifies.
        listeners: the listeners to accept on (any :class:`trio.abc.Listener` of streams).
        handler_nursery: the nursery to run the connections in; default: one of our own, so
            cancelling the server closes every connection.
        task_status: receives the listeners once they accept.
        ssl_context: wrap each accepted stream in a :class:`trio.SSLStream` with this context
            and complete the handshake before calling *handler_factory*. A failed or timed-out
            handshake is logged at info level and closes that connection only.
        max_connections: the most connections open at once (default 1,000; None: no limit).
            At the limit, accepting pauses (new peers wait in the listen backlog) and resumes
            when a connection closes.
        max_connections_per_peer: the most connections open at once from one IP address
            (default 50; None: no limit). A connection over it is closed at once and a warning
            logged. Streams without an IP address (Unix sockets, memory streams) are not counted.
        idle_timeout: set on each handler (see :attr:`AsyncChat.idle_timeout`): seconds without
            input before the connection is closed (None: never). Default: keep the handler's
            own value.
        max_queued_bytes: set on each handler (see :attr:`AsyncChat.max_queued_bytes`): the
            most bytes that pushes from other tasks may leave waiting for a slow reader before
            its connection is closed (None: no limit). Default: keep the handler's own value.
        shutdown_event: when this event is set, shut down gracefully: close the listeners (no
            new connections), wait up to *grace_period* seconds for the open connections to
            finish, cancel the ones that are left, then return. Handlers can watch the same event
            to finish early, e.g. by sending a goodbye and calling
            :meth:`AsyncChat.close_when_done`.
        grace_period: seconds a graceful shutdown waits before cancelling the connections that
            are still open (default 5; ``math.inf``: wait for all of them).
        tls_handshake_timeout: seconds allowed for a TLS handshake (default 10; None: no
            limit).

    Returns:
        After a graceful shutdown, once every connection has closed. Otherwise it runs until
        cancelled.

    Raises:
        TypeError, ValueError: an option has the wrong type or value (before anything starts).
        OSError: ``accept()`` failed for a reason other than the system running out of file
            descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS: those are logged and
            accepting is retried after 100 ms, as :func:`trio.serve_listeners` does).

    Warning:
        Unlike trio's, an exception from one connection's handler does not crash the server: it
        is logged on the ``trio_chat`` logger with the peer address and traceback, that connection
        is closed, and the others go on. A peer that resets its connection is logged at debug
        level only, and one that breaks the framing (:class:`FrameTooLongError`) at warning
        level without a traceback. Exceptions that are not :class:`Exception` (``Cancelled``,
        ``KeyboardInterrupt``) still propagate.
    """
    listeners = list(listeners)
    try:
        _check_options(
            max_connections=max_connections,
            max_connections_per_peer=max_connections_per_peer,
            idle_timeout=idle_timeout,
            max_queued_bytes=max_queued_bytes,
            grace_period=grace_period,
            tls_handshake_timeout=tls_handshake_timeout,
        )
    except BaseException:  # the listeners are ours to close, as with trio.serve_listeners
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    server = _Server(
        handler_factory=handler_factory,
        ssl_context=ssl_context,
        tls_handshake_timeout=tls_handshake_timeout,
        max_connections_per_peer=max_connections_per_peer,
        idle_timeout=idle_timeout,
        max_queued_bytes=max_queued_bytes,
        slots=None if max_connections is None else trio.CapacityLimiter(max_connections),
    )
    async with trio.open_nursery() as own_nursery:
        connections = own_nursery if handler_nursery is None else handler_nursery
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                accepting.start_soon(server.accept_loop, listener, connections)
            if shutdown_event is not None:
                accepting.start_soon(_stop_on, shutdown_event, accepting.cancel_scope)
            # Last, as trio does: the listeners already queue connections, and an error above
            # should reach our caller rather than a started() server.
            task_status.started(listeners)
        # Only a shutdown ends accepting (an accept loop never returns on its own).
        await server.drain(grace_period)


async def serve_tcp(
    handler_factory: HandlerFactory,
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_peer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    idle_timeout: float | _Keep | None = _KEEP,
    max_queued_bytes: int | _Keep | None = _KEEP,
    shutdown_event: trio.Event | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> None:
    """Listen on *host*:*port* (0 picks a free port) and serve; see :func:`serve_listeners`.

    ``task_status.started()`` receives the listeners, as from :func:`trio.serve_tcp`: with
    ``port=0``, ask ``listeners[0].socket.getsockname()`` which port was picked. *host* and
    *backlog* are passed to :func:`trio.open_tcp_listeners`; the other options are
    :func:`serve_listeners`'s. With *ssl_context*, every connection speaks TLS from its first
    byte; for STARTTLS leave it None and call :meth:`AsyncChat.start_tls` from the handler.
    """
    _check_options(  # before binding: a wrong option should not cost a port
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        idle_timeout=idle_timeout,
        max_queued_bytes=max_queued_bytes,
        grace_period=grace_period,
        tls_handshake_timeout=tls_handshake_timeout,
    )
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    await serve_listeners(
        handler_factory,
        listeners,
        handler_nursery=handler_nursery,
        task_status=task_status,
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        idle_timeout=idle_timeout,
        max_queued_bytes=max_queued_bytes,
        shutdown_event=shutdown_event,
        grace_period=grace_period,
        tls_handshake_timeout=tls_handshake_timeout,
    )

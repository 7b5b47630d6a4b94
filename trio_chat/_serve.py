"""Serving: run a handler per accepted connection, on :func:`trio.serve_listeners`, isolated.

Mirrors ``trio.serve_tcp`` / ``trio.serve_listeners`` and is built on the latter (its accept
loops, its retry after ``EMFILE``), with one deliberate difference: an exception in one
connection's handler is logged and closes that connection only, where trio's helpers let it crash
the whole server. Around trio's helper it adds limits, TLS, and a graceful shutdown that flushes.

Task layout of one server::

    serve_listeners()             returns after a graceful shutdown, else runs until cancelled
    ├── log summaries             one line per reason per second under a flood (_serve_log)
    ├── accepting                 cancelled when the shutdown_event is set
    │   ├── trio.serve_listeners  over SlotListeners: accept() waits for a free slot (_limits)
    │   └── shutdown watcher      waits for shutdown_event
    └── connections               our nursery, or the caller's handler_nursery
        └── connection            one per stream, in a CancelScope of its own: the per-peer
                                  limit, the TLS handshake, then the handler (AsyncChat.run(),
                                  or ``await handler(stream)``)
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import math
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeAlias, TypeVar

import attrs
import trio

from ._chat import AsyncChat
from ._exceptions import FrameTooLongError, IncompleteFrameError
from ._limits import PeerLimit, SlotListener, default_max_connections, peer_key
from ._reuseport import open_tcp_listeners_reuseport
from ._serve_log import ThrottledLog
from ._serve_stream import (
    IdleTimeoutStream,
    close_gracefully,
    describe_peer,
    raised_by,
    stream_is_closed,
    with_idle_timeout,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_PEER_IPV6_PREFIX",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "HandlerFactory",
    "StreamHandler",
    "default_max_connections",
    "serve_listeners",
    "serve_tcp",
]

logger: Final = logging.getLogger("trio_chat")

#: Makes the handler of one connection from its stream; an ``AsyncChat`` subclass qualifies.
HandlerFactory: TypeAlias = Callable[[trio.abc.Stream], AsyncChat]

#: A trio-style handler: ``async def handler(stream)`` serves one connection, as for
#: :func:`trio.serve_tcp` (``FramedStream`` code, say).
StreamHandler: TypeAlias = Callable[[trio.abc.Stream], Awaitable[object]]

# The listeners' own type, handed back by task_status.started(), as trio.serve_listeners does.
ListenerT = TypeVar("ListenerT", bound=trio.abc.Listener[Any])

#: What ``max_connections="auto"`` gave when trio_chat was imported (serve_tcp works it out
#: again at each call, from the open-file limit of the moment: :func:`default_max_connections`).
DEFAULT_MAX_CONNECTIONS: Final = default_max_connections()

#: No per-peer limit by default (as in trio, asyncio and Twisted): a load test, or every client
#: behind one NAT or reverse proxy, comes from one address.
DEFAULT_MAX_CONNECTIONS_PER_PEER: Final = None

# 5 seconds: half of `docker stop`'s 10 s before SIGKILL, so the cancel-and-close step that
# follows still runs; Kubernetes (30 s) and systemd (90 s) allow more if a caller wants it.
DEFAULT_GRACE_PERIOD: Final = 5.0

# 10 seconds: a handshake is two round trips, well under a second even across continents;
# ten covers a congested mobile link many times over, and bounds how long a peer that connects
# and sends nothing holds a connection slot. (asyncio allows 60 s; nginx's client timeouts 60 s.)
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 10.0

# IPv6 peers are counted per /64 by max_connections_per_peer: the smallest network a site or a
# home is given (RFC 6177 recommends /56 or /48 for them), and the one SLAAC hands addresses out
# of, so one machine can use millions of addresses in it.
DEFAULT_PEER_IPV6_PREFIX: Final = 64

# After the grace period the connections left are cancelled; cancelled code closes at once, but
# shielded code may run on for a bounded time (an async connection_lost() hook: 5 s). Past this,
# something shields itself without a bound: said in the log (at error level), then waited for,
# since trio cannot end a task that ignores cancellation.
_CANCEL_BOUND: Final = 10.0

HANDLER: Final = "handler"


class _Style(enum.Enum):
    """What serve_listeners() was given to serve with."""

    CHAT = "an AsyncChat subclass"
    FACTORY = "a function that returns an AsyncChat"
    STREAM = "an async function that serves the stream"


def _unwrap(handler: object) -> object:
    while isinstance(handler, functools.partial):
        handler = handler.func
    return handler


def _is_async(handler: object) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    target = _unwrap(handler)
    # An object with an async __call__ (a class's __call__ makes instances, not coroutines).
    return not inspect.isclass(target) and inspect.iscoroutinefunction(type(target).__call__)


def _handler_style(handler: object) -> _Style:
    """How *handler* serves a connection; TypeError (naming the fix) if it cannot."""
    usage = (
        "pass an AsyncChat subclass (or a function that makes one AsyncChat per connection), "
        "or an async function that serves one stream"
    )
    target = _unwrap(handler)
    if isinstance(target, AsyncChat):
        name = type(target).__name__
        raise TypeError(
            f"handler is an instance of {name}, but each connection needs a handler of its "
            f"own: pass the class ({name}) or a function that makes one"
        )
    if inspect.isclass(target):
        if not issubclass(target, AsyncChat):
            raise TypeError(f"handler is the class {target.__name__!r}: {usage}")
        style = _Style.CHAT
    elif not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__!r}: {usage}")
    elif inspect.isasyncgenfunction(target):
        raise TypeError(f"handler {target!r} is an async generator function: {usage}")
    else:
        style = _Style.STREAM if _is_async(handler) else _Style.FACTORY
    try:
        signature = inspect.signature(handler)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature: try it per connection
        return style
    try:
        signature.bind(object())
    except TypeError as exc:
        raise TypeError(
            f"handler {getattr(target, '__name__', target)!r} must take one argument, the "
            f"stream ({exc}); bind the others with functools.partial(handler, ...)"
        ) from None
    return style


# ---------------------------------------------------------------------------------- options


def _either(keyword: str, validator: Callable[[Any, Any, Any], None]) -> Any:
    """Accept the string *keyword* as it is, and anything else if *validator* does."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not (isinstance(value, str) and value == keyword):
            validator(instance, attribute, value)

    return check


_v = attrs.validators
_number: Any = _v.instance_of((int, float))  # an int or a float: typed loosely for mypy
_positive_or_none = _v.optional([_number, _v.gt(0)])
_count_or_none = _v.optional([_v.instance_of(int), _v.ge(1)])


@attrs.frozen(kw_only=True)
class _Options:
    """serve_listeners()'s options, checked (with the names and bounds in the messages)."""

    max_connections: int | Literal["auto"] | None = attrs.field(
        validator=_either("auto", _count_or_none)
    )
    max_connections_per_peer: int | None = attrs.field(validator=_count_or_none)
    peer_ipv6_prefix: int = attrs.field(validator=[_v.instance_of(int), _v.ge(0), _v.le(128)])
    idle_timeout: float | Literal["handler"] | None = attrs.field(
        validator=_either(HANDLER, _positive_or_none)
    )
    frame_timeout: float | Literal["handler"] | None = attrs.field(
        validator=_either(HANDLER, _positive_or_none)
    )
    max_queued_bytes: int | Literal["handler"] | None = attrs.field(
        validator=_either(HANDLER, _v.optional([_v.instance_of(int), _v.ge(0)]))
    )
    grace_period: float = attrs.field(validator=[_number, _v.ge(0)])
    tls_handshake_timeout: float | None = attrs.field(validator=_positive_or_none)

    def check_style(self, style: _Style) -> None:
        """Options that only an AsyncChat can follow are refused for a trio-style handler."""
        if style is not _Style.STREAM:
            return
        for name in ("frame_timeout", "max_queued_bytes"):
            if getattr(self, name) != HANDLER:
                raise TypeError(
                    f"{name} applies to AsyncChat handlers, and the handler is an async function"
                    f" that reads its stream itself: leave {name} out (bound your own reads, or "
                    "use idle_timeout, which serving applies to the stream)"
                )


# ------------------------------------------------------------------------------- connections


class _Phase(enum.Enum):
    ADMITTING = "admitting"  # per-peer limit, TLS handshake: no handler yet
    CHAT = "chat"  # an AsyncChat runs
    STREAM = "stream"  # a trio-style handler runs
    CLOSED = "closed"


@attrs.define(eq=False)
class _Connection(trio.abc.AsyncResource):
    """One accepted connection, from accept() until its stream is closed and it is forgotten.

    It is what the SlotListener hands to trio.serve_listeners, which closes it (``aclose``)
    when the connection's task ends, however it ends.
    """

    server: _Server
    stream: trio.abc.Stream  # as accepted (under TLS)
    peer: str  # captured at accept, for every log line
    key: str | None  # what max_connections_per_peer counts it under
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    phase: _Phase = _Phase.ADMITTING
    chat: AsyncChat | None = None
    holds_slot: bool = False
    counted: bool = False  # by the per-peer limit

    def stream_closed(self) -> bool:
        return self.phase is _Phase.CLOSED or stream_is_closed(self.stream)

    async def aclose(self) -> None:
        self.server.forget(self)
        await trio.aclose_forcefully(self.stream)


@attrs.define(eq=False, kw_only=True)
class _Server:
    """The state of one serve_listeners() call: options, slots, and the open connections."""

    handler: Any
    style: _Style
    options: _Options
    ssl_context: ssl.SSLContext | None
    log: ThrottledLog
    slots: trio.CapacityLimiter | None
    peers: PeerLimit[_Connection] | None
    open: set[_Connection] = attrs.field(factory=set)
    all_closed: trio.Event | None = None  # set when the last open connection is gone
    shutting_down: bool = False

    def admit(self, stream: trio.abc.Stream) -> _Connection:
        """Make the record of a stream just accepted (the SlotListener calls it at once)."""
        peer, host = describe_peer(stream)
        key = None
        if host is not None and self.peers is not None:
            key = peer_key(host, self.options.peer_ipv6_prefix)
        connection = _Connection(self, stream, peer, key)
        connection.holds_slot = self.slots is not None  # taken by the SlotListener next
        self.open.add(connection)
        logger.debug("accepted connection from %s (%d open)", peer, len(self.open))
        return connection

    def forget(self, connection: _Connection) -> None:
        """Undo what admit() counted; idempotent."""
        if connection.phase is _Phase.CLOSED:
            return
        connection.phase = _Phase.CLOSED
        if connection.holds_slot and self.slots is not None:
            connection.holds_slot = False
            # RuntimeError: the SlotListener was cancelled before it got the slot.
            with contextlib.suppress(RuntimeError):
                self.slots.release_on_behalf_of(connection)
        if connection.counted and self.peers is not None and connection.key is not None:
            self.peers.release(connection, connection.key)
        self.open.discard(connection)
        logger.debug("connection from %s closed", connection.peer)
        if not self.open and self.all_closed is not None:
            self.all_closed.set()
            self.all_closed = None

    async def connection(self, connection: _Connection) -> None:
        """One connection's task: its failures are logged here and go no further.

        trio.serve_listeners closes the connection (its ``aclose``) when this returns.
        """
        with connection.scope:
            if connection.key is not None and self.peers is not None:
                if not await self.peers.admit(connection, connection.key):
                    return
                connection.counted = True
            stream = connection.stream
            try:
                if self.ssl_context is not None:
                    tls = await self.handshake(connection)
                    if tls is None:
                        return
                    stream = tls
                if self.shutting_down:
                    return  # told to close before it started: nothing to finish
                if self.style is _Style.STREAM:
                    await self.run_stream_handler(connection, stream)
                else:
                    await self.run_factory(connection, stream)
            except Exception as exc:
                self.report(connection, exc, stream)
        if connection.scope.cancelled_caught:
            logger.debug("connection from %s cancelled", connection.peer)

    async def run_factory(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        made = self.handler(stream)
        if isinstance(made, AsyncChat):
            options = self.options
            # Set on the instance, after __init__: they override the class attributes.
            if not isinstance(idle_timeout := options.idle_timeout, str):
                made.idle_timeout = idle_timeout
            if not isinstance(frame_timeout := options.frame_timeout, str):
                made.frame_timeout = frame_timeout
            if not isinstance(max_queued_bytes := options.max_queued_bytes, str):
                made.max_queued_bytes = max_queued_bytes
            connection.chat = made
            connection.phase = _Phase.CHAT
            # A factory may build its handler without the stream; run() then takes it.
            await made.run(stream if made.stream is None else None)
        elif inspect.isawaitable(made):  # e.g. lambda stream: serve(stream, db)
            connection.phase = _Phase.STREAM
            await made
            await close_gracefully(stream)
        else:
            raise TypeError(
                "the handler factory must return an AsyncChat (or be an async function that "
                f"serves the stream), not {type(made).__name__!r}"
            )

    async def run_stream_handler(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        idle_timeout = self.options.idle_timeout
        served = with_idle_timeout(stream, None if isinstance(idle_timeout, str) else idle_timeout)
        connection.phase = _Phase.STREAM
        await self.handler(served)
        # The handler returned: whatever it left unread must not turn the close into a reset.
        await close_gracefully(served)

    def report(self, connection: _Connection, exc: Exception, stream: trio.abc.Stream) -> None:
        """Log how a connection ended with *exc*: the peer's doing (no traceback), or a bug."""
        peer = connection.peer
        ours = (connection.stream, stream)
        leaves = _leaves(exc)
        resets = [leaf for leaf in leaves if _is_reset(leaf, ours)]
        protocol = [leaf for leaf in leaves if isinstance(leaf, _PROTOCOL_ERRORS)]
        timeouts = [leaf for leaf in leaves if _is_idle_timeout(leaf)]
        if len(resets) + len(protocol) + len(timeouts) < len(leaves):
            logger.error("handler for connection from %s failed; closing it", peer, exc_info=exc)
        elif protocol:
            # The peer broke the protocol; no traceback: nothing here is a bug.
            first = protocol[0]
            self.log.log(
                "protocol error",
                logging.WARNING,
                "closing connection from %s: %s: %s",
                peer,
                type(first).__name__,
                first,
            )
        elif timeouts:
            logger.info("closing connection from %s: %s", peer, timeouts[0])
        else:
            logger.debug("connection from %s reset by the peer: %r", peer, resets[0])

    async def handshake(self, connection: _Connection) -> trio.SSLStream[Any] | None:
        """The server side of a TLS handshake, bounded in time; None (logged) if it failed."""
        assert self.ssl_context is not None
        tls = trio.SSLStream(connection.stream, self.ssl_context, server_side=True)
        timeout = self.options.tls_handshake_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as handshake:
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                self.log.log(
                    "TLS handshake failed",
                    logging.INFO,
                    "TLS handshake with %s failed: %s",
                    connection.peer,
                    exc.__cause__ or exc,
                )
                return None
        if handshake.cancelled_caught:
            self.log.log(
                "TLS handshake timed out",
                logging.INFO,
                "TLS handshake with %s timed out after %s seconds",
                connection.peer,
                timeout,
            )
            return None
        return tls

    # ------------------------------------------------------------- shutdown

    async def drain(self, grace_period: float) -> None:
        """The graceful shutdown, once accepting stopped: tell every connection, wait up to
        *grace_period* seconds, cancel what is left; then report the counts."""
        self.shutting_down = True
        started = trio.current_time()
        told = len(self.open)
        logger.info(
            "stopped accepting; closing %d open connection(s) (grace period %s s)",
            told,
            grace_period,
        )
        for connection in list(self.open):
            if connection.phase is _Phase.CHAT:
                assert connection.chat is not None
                # Stop taking input, send what is queued, then close (never blocks).
                connection.chat.close_when_done()
            elif connection.phase is _Phase.ADMITTING:
                connection.scope.cancel()  # nothing started: nothing to finish
            # A trio-style handler watches the shutdown_event itself, or is cancelled below.
        with trio.move_on_after(grace_period):
            await self.wait_all_closed()
        cancelled = len(self.open)
        if cancelled:
            logger.info("grace period over: cancelling %d connection(s) still open", len(self.open))
            for connection in self.open:
                connection.scope.cancel()
            with trio.move_on_after(_CANCEL_BOUND):
                await self.wait_all_closed()
            if self.open:
                logger.error(
                    "%d connection(s) still running %s s after they were cancelled: code that "
                    "shields itself from cancellation without a bound holds the shutdown up",
                    len(self.open),
                    _CANCEL_BOUND,
                )
                await self.wait_all_closed()
        logger.info(
            "shutdown complete after %.2f s: %d connection(s) closed cleanly, %d cancelled "
            "after the grace period",
            trio.current_time() - started,
            told - cancelled,
            cancelled,
        )

    async def wait_all_closed(self) -> None:
        while self.open:
            if self.all_closed is None:
                self.all_closed = trio.Event()
            await self.all_closed.wait()


_PROTOCOL_ERRORS: Final = (FrameTooLongError, IncompleteFrameError)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _is_reset(exc: BaseException, streams: tuple[object, ...]) -> bool:
    """The peer broke this connection: BrokenResourceError raised by its own stream."""
    return isinstance(exc, trio.BrokenResourceError) and raised_by(exc, streams)


def _is_idle_timeout(exc: BaseException) -> bool:
    """serving's idle_timeout cut a trio-style handler's wait short (IdleTimeoutStream)."""
    tb = exc.__traceback__ if isinstance(exc, trio.TooSlowError) else None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, IdleTimeoutStream) and owner.expired is exc:
            return True
        tb = tb.tb_next
    return False


async def _stop_on(event: trio.Event, accepting: trio.CancelScope) -> None:
    await event.wait()
    logger.info("shutdown requested: closing the listeners")
    accepting.cancel()


async def serve_listeners(
    handler: HandlerFactory | StreamHandler,
    listeners: Sequence[ListenerT],
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[ListenerT]] = trio.TASK_STATUS_IGNORED,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | Literal["auto"] | None = "auto",
    max_connections_per_peer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    peer_ipv6_prefix: int = DEFAULT_PEER_IPV6_PREFIX,
    idle_timeout: float | Literal["handler"] | None = "handler",
    frame_timeout: float | Literal["handler"] | None = "handler",
    max_queued_bytes: int | Literal["handler"] | None = "handler",
    shutdown_event: trio.Event | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> None:
    """Accept connections on *listeners* and serve each with *handler*, in a task of its own.

    Built on :func:`trio.serve_listeners`: it closes the listeners when it ends, runs each
    connection in a task of its own (in *handler_nursery* if given), and calls
    ``task_status.started(listeners)``, so ``await nursery.start(serve_listeners, ...)`` returns
    the listeners. It runs until cancelled, or until a graceful shutdown (see *shutdown_event*).

    Args:
        handler: what serves a connection, one of:

            * an :class:`AsyncChat` subclass, or a function that makes an ``AsyncChat`` from the
              stream (:data:`HandlerFactory`; bind other arguments with
              :func:`functools.partial`): its :meth:`~AsyncChat.run` is awaited;
            * an ``async def handler(stream)`` (:data:`StreamHandler`), as for
              :func:`trio.serve_tcp`: ``FramedStream`` code, say. It gets the same isolation,
              limits, TLS and shutdown; when it returns, the stream is closed for it.

            The stream is wrapped in TLS first if *ssl_context* is given.
        listeners: the listeners to accept on (any :class:`trio.abc.Listener` of streams).
        handler_nursery: the nursery to run the connections in; default: one of our own, so
            cancelling the server closes every connection.
        task_status: receives the listeners once they accept.
        ssl_context: wrap each accepted stream in a :class:`trio.SSLStream` with this context
            and complete the handshake before the handler starts. A failed or timed-out
            handshake is logged at info level and closes that connection only.
        max_connections: the most connections open at once. At the limit, accepting pauses
            (new peers wait in the listen backlog; nobody is refused) and resumes when a
            connection closes. Default ``"auto"``: :func:`default_max_connections`, derived
            from the process's open-file limit when the server starts (896 at the usual
            ``ulimit -n`` of 1,024). None: no limit.
        max_connections_per_peer: the most connections open at once from one IP address, or
            from one IPv6 network of *peer_ipv6_prefix* bits (default None: no limit, as in
            trio, asyncio and Twisted: a load test, clients behind one NAT or a reverse proxy
            come from one address). A connection over it waits up to a second for one of its
            peer's connections to close (a client that closes and reconnects at once is not
            refused), then is closed; refusals are logged as warnings, summarised once a second.
            Peers without an IP address (Unix sockets, memory streams) are not counted.
        peer_ipv6_prefix: how many leading bits of an IPv6 address make one peer for
            *max_connections_per_peer* (default 64; 128: each address on its own).
        idle_timeout: seconds a connection may wait for its peer (to send, or to read what it
            is sent) before it is closed and it is logged at info level (None: forever).
            Set on each ``AsyncChat`` (:attr:`AsyncChat.idle_timeout`), or bounds each wait of
            a trio-style handler's stream (which then raises :class:`trio.TooSlowError`).
            Default ``"handler"``: the handler class's own value (for a trio-style handler: no
            limit).
        frame_timeout: seconds within which a frame must be complete once its first byte has
            arrived (``AsyncChat.frame_timeout``: the defence against peers that trickle a byte
            at a time, which *idle_timeout* cannot stop). ``AsyncChat`` handlers only.
            Default ``"handler"``: the handler class's own value.
        max_queued_bytes: set on each handler (see :attr:`AsyncChat.max_queued_bytes`): the
            most bytes that pushes from other tasks may leave waiting for a slow reader before
            its connection is closed (None: no limit). ``AsyncChat`` handlers only. Default
            ``"handler"``: the handler class's own value.
        shutdown_event: when this event is set, shut down gracefully: close the listeners (no
            new connections), tell every ``AsyncChat`` to finish
            (:meth:`~AsyncChat.close_when_done`: it stops reading, sends what is queued, then
            closes), wait up to *grace_period* seconds for the connections to close, cancel the
            ones that are left, log how many closed cleanly and how many were cancelled, and
            return. A trio-style handler can watch the same event to finish early. To say
            goodbye, push it before setting the event: pushes after it raise.
        grace_period: seconds a graceful shutdown waits before cancelling the connections that
            are still open (default 5; ``math.inf``: wait for all of them).
        tls_handshake_timeout: seconds allowed for a TLS handshake (default 10; None: no
            limit).

    Returns:
        After a graceful shutdown, once every connection has closed. Otherwise it runs until
        cancelled.

    Raises:
        TypeError: *handler* cannot serve a connection (an ``AsyncChat`` instance rather than
            its class, a class that is not an ``AsyncChat``, a function that does not take one
            argument), or an option has the wrong type; raised at the call, before anything
            starts, and the listeners are closed.
        ValueError: an option is out of range (before anything starts).
        OSError: ``accept()`` failed for a reason other than the system running out of file
            descriptors or memory (those are logged by :func:`trio.serve_listeners`, which
            retries after 100 ms).

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
        style = _handler_style(handler)
        options = _Options(
            max_connections=max_connections,
            max_connections_per_peer=max_connections_per_peer,
            peer_ipv6_prefix=peer_ipv6_prefix,
            idle_timeout=idle_timeout,
            frame_timeout=frame_timeout,
            max_queued_bytes=max_queued_bytes,
            grace_period=grace_period,
            tls_handshake_timeout=tls_handshake_timeout,
        )
        options.check_style(style)
    except BaseException:  # the listeners are ours to close, as with trio.serve_listeners
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    if max_connections == "auto":
        max_connections = default_max_connections()
    log = ThrottledLog(logger)
    server = _Server(
        handler=handler,
        style=style,
        options=options,
        ssl_context=ssl_context,
        log=log,
        slots=None if max_connections is None else trio.CapacityLimiter(max_connections),
        peers=PeerLimit(max_connections_per_peer, log) if max_connections_per_peer else None,
    )
    slot_listeners = [
        SlotListener(listener, server.slots, server.admit, log) for listener in listeners
    ]
    async with trio.open_nursery() as own_nursery:
        connections = own_nursery if handler_nursery is None else handler_nursery
        own_nursery.start_soon(log.run, name="trio_chat: log summaries")
        async with trio.open_nursery() as accepting:
            await accepting.start(
                functools.partial(
                    trio.serve_listeners,
                    server.connection,
                    slot_listeners,
                    handler_nursery=connections,
                )
            )
            if shutdown_event is not None:
                accepting.start_soon(_stop_on, shutdown_event, accepting.cancel_scope)
            # Last, as trio does: the listeners already queue connections, and an error above
            # should reach our caller rather than a started() server.
            task_status.started(listeners)
        # Only a shutdown ends accepting (trio.serve_listeners never returns on its own).
        await server.drain(grace_period)
        log.flush()
        own_nursery.cancel_scope.cancel()  # the log summaries' task


async def serve_tcp(
    handler: HandlerFactory | StreamHandler,
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    reuse_port: bool = False,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | Literal["auto"] | None = "auto",
    max_connections_per_peer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    peer_ipv6_prefix: int = DEFAULT_PEER_IPV6_PREFIX,
    idle_timeout: float | Literal["handler"] | None = "handler",
    frame_timeout: float | Literal["handler"] | None = "handler",
    max_queued_bytes: int | Literal["handler"] | None = "handler",
    shutdown_event: trio.Event | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> None:
    """Listen on *host*:*port* (0 picks a free port) and serve; see :func:`serve_listeners`.

    ``task_status.started()`` receives the listeners, as from :func:`trio.serve_tcp`: with
    ``port=0``, ask ``listeners[0].socket.getsockname()`` which port was picked. *host* and
    *backlog* are passed to :func:`trio.open_tcp_listeners` (no *host*: every address, IPv4 and
    IPv6); the other options are :func:`serve_listeners`'s. With *ssl_context*, every connection
    speaks TLS from its first byte; for STARTTLS leave it None and call
    :meth:`AsyncChat.start_tls` from the handler. *reuse_port*: set ``SO_REUSEPORT`` on the
    listening sockets, so several processes (see ``trio_chat.run_workers``) can listen on
    the same port and the kernel spreads the connections over them (Linux, FreeBSD;
    :exc:`NotImplementedError` elsewhere).

    Raises:
        TypeError, ValueError: as :func:`serve_listeners`, before anything is bound.
        OSError: the port could not be bound (taken, or below 1024 without the privilege).
    """
    # Before binding: a wrong handler or option should not cost a port.
    options = _Options(
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        peer_ipv6_prefix=peer_ipv6_prefix,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        max_queued_bytes=max_queued_bytes,
        grace_period=grace_period,
        tls_handshake_timeout=tls_handshake_timeout,
    )
    options.check_style(_handler_style(handler))
    if reuse_port:
        listeners = await open_tcp_listeners_reuseport(port, host=host, backlog=backlog)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    await serve_listeners(
        handler,
        listeners,
        handler_nursery=handler_nursery,
        task_status=task_status,
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        peer_ipv6_prefix=peer_ipv6_prefix,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        max_queued_bytes=max_queued_bytes,
        shutdown_event=shutdown_event,
        grace_period=grace_period,
        tls_handshake_timeout=tls_handshake_timeout,
    )

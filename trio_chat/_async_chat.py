"""``async_chat``: :class:`AsyncChat` with asynchat's defaults, for code moving from asynchat.

A subclass, not a second implementation: every behaviour lives in :class:`AsyncChat`; this
class only changes defaults and adds the names and calls asynchat code relies on. What differs
from :class:`AsyncChat`, and why, is tabled in ``docs/migration.rst``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket as stdlib_socket
from collections.abc import Awaitable
from typing import Any, Final

import trio

from ._buffer import Terminator
from ._chat import AsyncChat
from ._producers import ProducerLike
from ._util import _peer_address

__all__ = ["async_chat"]

logger: Final = logging.getLogger("trio_chat")


def _as_stream(sock: object) -> trio.abc.Stream | None:
    """What ``async_chat(sock)`` talks over: a trio stream as given, a socket wrapped in one."""
    if sock is None or isinstance(sock, trio.abc.Stream):
        return sock
    if isinstance(sock, stdlib_socket.socket):
        sock = trio.socket.from_stdlib_socket(sock)
    if isinstance(sock, trio.socket.SocketType):
        return trio.SocketStream(sock)
    raise TypeError(
        "async_chat(sock) takes a trio stream, a trio socket or a connected socket.socket,"
        f" not {type(sock).__name__!r}"
    )


class _PeerName:
    """``peer`` on :class:`async_chat`: the log name until an instance assigns its own value.

    A non-data descriptor (no ``__set__``), so ``self.peer = ...`` stores a plain instance
    attribute, as asynchat subclasses (smtpd, for one) expect; the base never reads it back.
    """

    def __get__(self, obj: AsyncChat | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return AsyncChat.peer.__get__(obj, owner)


class async_chat(AsyncChat):  # noqa: N801  (asynchat's name, so that only the import changes)
    """:class:`AsyncChat` with asynchat's defaults and behaviours, for code moving from asynchat.

    Change ``import asynchat`` / ``asynchat.async_chat`` to ``from trio_chat import
    async_chat``; serve the class with :func:`~trio_chat.serve_tcp` (or await :meth:`run`).
    New code should derive from :class:`AsyncChat`, whose defaults are the safe ones.

    Differences from :class:`AsyncChat`:

    * ``max_frame_size`` and ``max_queued_bytes`` are None (no limit), as in asynchat: a
      protocol that enforces its own limits (smtpd's ``data_size_limit``) keeps working.
    * ``async_chat(sock=None, map=None)``: *sock* may be a trio stream, a trio socket or a
      connected :class:`socket.socket` (wrapped in a :class:`trio.SocketStream`).
    * :attr:`addr` holds the peer's address for socket streams, :attr:`peer` may be assigned,
      and :attr:`terminator` reads and sets the terminator, as in asynchat.
    * :meth:`handle_close` is called once when the connection ends, whatever ended it, unless
      your own code ended it with :meth:`~AsyncChat.close`: on the peer's EOF (as in
      :class:`AsyncChat`), and also once :meth:`close_when_done` completes, after a hook raised,
      after a reset, a timeout or a server's shutdown.
    * :meth:`push` and :meth:`push_with_producer` on a closed or closing connection drop the data
      (asynchat queued it and never sent it) instead of raising.
    * ``use_encoding``: with it set, a ``str`` terminator is encoded with ``encoding``.

    Args:
        sock: the stream (or socket) to talk over; it may instead be given to :meth:`run`.
        map: asyncore's socket map. Ignored: trio finds connections through the nurseries
            that run them, so there is nothing to register.

    Attributes:
        peer: the peer's name for log messages (as :attr:`AsyncChat.peer`) until the handler
            assigns a value of its own, which the base never reads.
        addr: the peer's address (``getpeername()``) for a socket stream, set when the
            handler is created with one or when :meth:`run` starts, unless the subclass has set
            it; None for other streams.
        use_encoding: encode a ``str`` given to :meth:`set_terminator` with :attr:`encoding`.
        encoding: the encoding ``use_encoding`` applies (asynchat's default, ``"latin-1"``).
    """

    # asynchat had no limits: the protocol on top enforces its own (smtpd: data_size_limit).
    max_frame_size: int | None = None
    # asynchat queued every push; a chat room's broadcast to a slow member grew without bound.
    max_queued_bytes: int | None = None
    addr: Any = None
    use_encoding: bool = False
    encoding: str = "latin-1"
    peer: Any = _PeerName()  # a writable attribute over the base's read-only property

    # Per-connection flags, class-level defaults so that a subclass skipping __init__ still works.
    __handle_close_ran = False  # handle_close() was called: at most once per connection
    __close_requested = False  # close_when_done() was called

    def __init__(self, sock: object = None, map: object = None) -> None:
        stream = _as_stream(sock)
        super().__init__(stream)
        if stream is not None:
            self.addr = _peer_address(stream)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The base calls handle_close() itself on the peer's EOF; connection_lost() must know
        # whether it ran, whichever subclass overrides it, without relying on super() calls.
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("handle_close")
        if not inspect.isfunction(hook) or hook.__dict__.get("_trio_chat_tracked"):
            return

        @functools.wraps(hook)
        def handle_close(self: async_chat) -> Awaitable[None] | None:
            self.__handle_close_ran = True
            result: Awaitable[None] | None = hook(self)
            return result

        handle_close.__dict__["_trio_chat_tracked"] = True
        cls.handle_close = handle_close  # type: ignore[method-assign]

    # ------------------------------------------------------------------ asynchat names

    @property
    def terminator(self) -> Terminator:
        """The terminator, as asynchat's attribute: reading it calls :meth:`get_terminator`,
        assigning it :meth:`set_terminator`."""
        return self.get_terminator()

    @terminator.setter
    def terminator(self, term: Terminator | str) -> None:
        self.set_terminator(term)

    def set_terminator(self, term: Terminator | str) -> None:
        """As :meth:`AsyncChat.set_terminator`; with ``use_encoding`` set, a ``str`` is encoded
        with ``encoding`` first, as asynchat did."""
        if isinstance(term, str) and self.use_encoding:
            term = term.encode(self.encoding)
        super().set_terminator(term)  # type: ignore[arg-type]  # a str is refused there

    # ------------------------------------------------------------------ hooks

    def handle_close(self) -> Awaitable[None] | None:
        """Called once when the connection ends (see the class description for when).

        The default closes once the queued output is sent (:meth:`close_when_done`).
        asynchat's called ``close()``, which dropped a reply to a peer that had half-closed.
        """
        self.__handle_close_ran = True
        return super().handle_close()

    def connection_lost(self, exc: BaseException | None) -> Awaitable[None] | None:
        """Calls :meth:`handle_close` if the connection ended without it, as asyncore did.

        A subclass that overrides this must call ``super().connection_lost(exc)``.
        """
        if self.__handle_close_ran:
            return None
        if exc is None and not self.__close_requested:
            return None  # your own close() ended it: asyncore did not call handle_close either
        return self.handle_close()

    # ------------------------------------------------------------------ controls

    def close_when_done(self) -> None:
        """As :meth:`AsyncChat.close_when_done`; :meth:`handle_close` is called once it is done,
        and later pushes are dropped."""
        self.__close_requested = True
        super().close_when_done()

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue *data* to be sent, as :meth:`AsyncChat.push`; on a closed or closing
        connection the data is dropped, as asynchat did.

        Raises:
            TypeError: *data* is not bytes, bytearray or memoryview.
        """
        try:
            super().push(data)
        except trio.ClosedResourceError:
            logger.debug("push() to %s after close: %d bytes dropped", self.peer, len(data))

    def push_with_producer(self, producer: ProducerLike) -> None:
        """Queue a producer, as :meth:`AsyncChat.push_with_producer`; on a closed or closing
        connection it is dropped, as asynchat did.

        Raises:
            TypeError: *producer* is not a producer, bytes or an (async) iterable of bytes.
        """
        try:
            super().push_with_producer(producer)
        except trio.ClosedResourceError:
            logger.debug("push_with_producer() to %s after close: dropped", self.peer)

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        """As :meth:`AsyncChat.run`; sets :attr:`addr` first if it is None."""
        if self.addr is None:
            self.addr = _peer_address(stream if stream is not None else self.stream)
        await super().run(stream)

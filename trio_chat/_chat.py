"""``AsyncChat``: asynchat's handler model on a trio stream.

The class users subclass: its hooks, its settings (plain class attributes, settable per
instance, as asynchat's are) and its controls. The machinery (the buffer, the output queue, the
receive and send loops, the connection's phase) lives in one private object
(``_connection.py``), so a subclass may use any attribute name of its own.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable

import trio

from ._buffer import DEFAULT_MAX_FRAME_SIZE, Terminator
from ._connection import CONNECTION_LOST_TIMEOUT, Connection, Phase
from ._producers import ProducerLike, as_bytes

__all__ = ["CONNECTION_LOST_TIMEOUT", "AsyncChat"]


class AsyncChat:
    """A connection handler in the style of ``asynchat.async_chat``, driven by :meth:`run`.

    Subclass it and implement :meth:`collect_incoming_data` and :meth:`found_terminator`;
    set the terminator with :meth:`set_terminator`; reply with :meth:`push`.

    Args:
        stream: the stream to talk over; it may instead be given to :meth:`run`.

    Attributes:
        ac_in_buffer_size: the most bytes one read asks the stream for.
        ac_out_buffer_size: the most bytes one write hands the stream: small pushes are joined
            up to it, larger ones written in pieces of it.
        max_frame_size: the most bytes of one frame with a bytes, tuple or regex terminator
            (None: no limit); read when :meth:`run` starts and by :meth:`set_terminator`.
        out_high_water: while more than this many pushed bytes wait to be sent, the receive loop
            stops reading (it resumes at half of it). It is checked after every hook, so what
            one read can queue is bounded by it plus one hook's reply.
        max_queued_bytes: when pushes made by *other* tasks (a chat room broadcasting, say) leave
            more than this many bytes waiting, the peer reads too slowly: the connection is closed
            and the reason logged (None: no limit). The handler's own pushes are bounded by
            ``out_high_water`` instead.
        idle_timeout: seconds a read may wait for input, and a write for the peer to take it,
            before the connection is closed and it is logged (None: wait forever). It bounds
            every wait on the peer, including the writes after :meth:`close_when_done` and the
            writes of a producer.
        frame_timeout: seconds within which a frame must be complete once its first bytes
            arrived (None: no limit), however steadily they trickle in: a defence against
            peers that hold a connection open by sending a byte now and then (what nginx's
            ``client_header_timeout`` does for a header block).
    """

    # 64 KiB: asynchat's sizes, and what one loopback read typically returns.
    ac_in_buffer_size: int = 65536
    ac_out_buffer_size: int = 65536
    max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE
    # Four writes' worth: enough to keep the send loop busy while the receive loop is paused, and
    # with one read of input (ac_in_buffer_size) it bounds what a connection holds by itself.
    out_high_water: int = 4 * 65536
    # 4 MiB: sixty-four 64 KiB writes of backlog for one slow peer before it is cut off; a handler
    # that streams more than that to a peer should use push_with_producer(), which is pulled.
    max_queued_bytes: int | None = 4 * 1024 * 1024
    idle_timeout: float | None = None
    frame_timeout: float | None = None

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        self.__c = Connection(self, stream)

    # ------------------------------------------------------------------ hooks

    def collect_incoming_data(self, data: bytes) -> None:
        """Called with each piece (never empty) of the current frame's incoming data."""
        raise NotImplementedError("subclasses of AsyncChat must implement collect_incoming_data")

    def found_terminator(self) -> Awaitable[None] | None:
        """Called when the terminator is found; may be ``async def`` (it is awaited before more
        input is processed)."""
        raise NotImplementedError("subclasses of AsyncChat must implement found_terminator")

    def handle_connect(self) -> Awaitable[None] | None:
        """Called (sync or async) when :meth:`run` starts, before any input is processed."""
        return None

    def handle_close(self) -> Awaitable[None] | None:
        """Called (sync or async) when the peer ends its input (EOF or a reset).

        The default flushes the queued output, then closes (:meth:`close_when_done`); so, unlike
        asynchat, a peer that half-closed after its request still gets the reply.
        """
        self.close_when_done()
        return None

    def connection_lost(self, exc: BaseException | None) -> Awaitable[None] | None:
        """Called exactly once when :meth:`run` ends, however it ends, after the stream was
        closed: the place to release what the connection held (leave a room, say).

        Args:
            exc: None for an orderly end (:meth:`close`, :meth:`close_when_done`, the peer's
                EOF); the exception that ended it otherwise: a hook's error (which :meth:`run`
                raises next), :class:`~trio_chat.FrameTooLongError`,
                :class:`trio.BrokenResourceError` (the peer reset the connection),
                :class:`trio.TooSlowError` (``idle_timeout``, ``frame_timeout`` or the
                ``max_queued_bytes`` cut-off), or :class:`trio.Cancelled` (:meth:`run` was
                cancelled from outside, a server's hard shutdown say).

        It may be ``async def``: it then runs shielded from cancellation for at most
        :data:`CONNECTION_LOST_TIMEOUT` seconds. An exception it raises is logged when another
        one ended the connection, and raised by :meth:`run` otherwise.
        """
        return None

    # --------------------------------------------------------------- controls

    @property
    def stream(self) -> trio.abc.Stream | None:
        """The stream this handler talks over (after :meth:`start_tls`, the TLS stream)."""
        return self.__c.stream

    @property
    def peer(self) -> str:
        """The peer's address for log messages (``"?"`` when the stream has none)."""
        return self.__c.peer

    @property
    def last_terminator(self) -> bytes | int | None:
        """What matched at the last :meth:`found_terminator`: the bytes (which member of a tuple,
        what a regex matched) or the count; None before the first."""
        return self.__c.buffer.last_terminator

    @property
    def queued_bytes(self) -> int:
        """Pushed bytes not yet written to the stream (producers are not counted)."""
        return self.__c.out.queued

    @property
    def closed(self) -> bool:
        """Whether the connection was closed (or :meth:`close_when_done` reached)."""
        phase = self.__c.phase
        return phase is Phase.CLOSED or phase is Phase.FLUSHED or phase is Phase.DONE

    def set_terminator(self, term: Terminator) -> None:
        """Set the input delimiter; it applies at once to input already received.

        *term* is bytes to search for, an int count of bytes, None (everything; ``b""`` and ``0``
        act as None), a tuple of bytes (the earliest match wins, then the longest) or a compiled
        bytes regular expression; :attr:`last_terminator` tells which bytes matched.

        Raises:
            TypeError: *term* is a ``str`` (pass bytes) or another type.
            ValueError: *term* is a negative int, or a pattern the buffer cannot search.
        """
        buffer = self.__c.buffer
        buffer.set_terminator(term)
        limit = self.max_frame_size
        if limit is not buffer._max_frame_size:  # validated only when it changes
            buffer.max_frame_size = limit

    def get_terminator(self) -> Terminator:
        """The current terminator; once a count terminator is satisfied it is ``0``."""
        return self.__c.buffer.get_terminator()

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue *data* to be sent, as it is now; never blocks.

        Raises:
            TypeError: *data* is not bytes, bytearray or memoryview.
            trio.ClosedResourceError: the connection is closed or closing.
        """
        if data.__class__ is not bytes:
            data = as_bytes(data, "push() data")
        c = self.__c
        if c.phase is not Phase.OPEN:
            c.check_open("push")
        if data:
            c.push(data)

    def push_with_producer(self, producer: ProducerLike) -> None:
        """Queue a producer, pulled only as fast as the peer reads; never blocks.

        Accepts an object with ``more()`` (returning ``b""`` when exhausted), a bytes-like object,
        or an iterable or async iterable of bytes.

        Raises:
            TypeError: *producer* is none of these (a ``str`` must be encoded first).
            trio.ClosedResourceError: the connection is closed or closing.
        """
        c = self.__c
        if isinstance(producer, (bytes, bytearray, memoryview)):
            c.check_open("push_with_producer")
            if producer:
                c.push(bytes(producer))  # never the subclass's push()
            return
        if isinstance(producer, str) or not (
            callable(getattr(producer, "more", None))
            or hasattr(producer, "__aiter__")
            or hasattr(producer, "__iter__")
        ):
            hint = " (encode it first)" if isinstance(producer, str) else ""
            raise TypeError(
                "push_with_producer() takes an object with more(), bytes, or an (async) iterable"
                f" of bytes, not {type(producer).__name__!r}{hint}"
            )
        c.check_open("push_with_producer")
        c.enqueue(producer)

    def close_when_done(self) -> None:
        """Close the connection once everything queued so far is sent; never blocks.

        It may be called from any task. Input that arrives afterwards is not processed, and
        later pushes raise ``trio.ClosedResourceError``.
        """
        self.__c.close_when_done()

    def close(self) -> None:
        """Close the connection now, dropping queued output; never blocks."""
        self.__c.close()

    def discard_buffers(self) -> None:
        """Drop queued output and unprocessed input (a pending :meth:`close_when_done` stays)."""
        self.__c.discard_buffers()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        """Upgrade this connection to TLS in mid-conversation (STARTTLS).

        Call it from an ``async def found_terminator`` after pushing the reply that announces the
        upgrade. The switch is a place in the output queue: everything pushed before the call
        (by any task) is written in plaintext, everything pushed after it goes out through TLS.
        It waits until the plaintext was written, discards every byte of input already received
        but not yet processed, wraps the stream in a :class:`trio.SSLStream` and completes the
        handshake. Discarding matters: plaintext that a peer (or an attacker in the middle)
        pipelined after the upgrade command must never be read as if it had come through TLS
        (the STARTTLS command injection hole, CVE-2011-0411).

        Raises:
            trio.BusyResourceError: not called from the receive loop (a hook).
            trio.ClosedResourceError: the connection is closed or closing.
            trio.BrokenResourceError: the handshake failed.
        """
        await self.__c.start_tls(ssl_context, server_side, server_hostname)

    # ------------------------------------------------------------------- run

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        """Drive the connection until it is closed; always closes the stream.

        Runs a receive loop and (once needed) a send loop in a nursery of its own. Returns when
        the connection was closed (by :meth:`close`, :meth:`close_when_done`, the peer, or a
        timeout), after :meth:`connection_lost`. An exception from a hook (or
        :class:`FrameTooLongError`) closes the connection, once what the hooks pushed before it
        was written (bounded by ``idle_timeout``, else two seconds), then propagates unchanged.

        Raises:
            TypeError: no stream was given, neither here nor to the constructor.
            ValueError: *stream* differs from the one given to the constructor.
            trio.BusyResourceError: ``run()`` is already running.
            trio.ClosedResourceError: ``run()`` already ran.
        """
        c = self.__c
        if stream is not None:
            if c.stream is not None and c.stream is not stream:
                raise ValueError("run() got a different stream than the one given to AsyncChat()")
            c.stream = stream
        if c.stream is None:
            raise TypeError("no stream to run on: pass one to AsyncChat(stream) or to run(stream)")
        if c.receive_task is not None:
            raise trio.BusyResourceError("this AsyncChat is already running")
        if c.phase is Phase.DONE:
            raise trio.ClosedResourceError("this AsyncChat already ran; create a new one")
        c.begin()
        try:
            async with trio.open_nursery() as nursery:  # the send loop starts in it when needed
                c.nursery = nursery
                if c.phase is Phase.CLOSED:  # close() before run(): only close the stream
                    nursery.cancel_scope.cancel()
                else:
                    try:
                        await c.receive_loop()
                    except Exception as exc:
                        c.fail(exc)  # flush what the hooks pushed before it, then close
        except BaseException as exc:
            c.ended_by(exc)
            raise
        finally:
            await c.end()  # close the stream, then connection_lost()
        if c.error is not None:
            # Kept and raised here, after the stream is closed, so a hook's error reaches the
            # caller as itself rather than wrapped in an ExceptionGroup.
            raise c.error

"""``AsyncChat``: asynchat's handler model on a trio stream.

Task layout of one connection (``await chat.run()``)::

    run()                       one nursery, cancelled by close()
    ├── receive loop            receive_some -> TerminatorBuffer -> hooks (in this task)
    └── send loop               output queue of bytes / producers -> stream.send_all
                                (started the first time it is needed)

``push()`` and friends never block: they append an item to the output queue and count its
bytes; the receive loop stops reading while more than ``out_high_water`` bytes wait, which is
what bounds memory when a peer sends without reading.

One writer at a time. While the send loop is idle, the receive loop writes the replies its own
hooks pushed itself, right after dispatching a read: a request-reply round trip then costs one
task, as in a hand-written trio handler, instead of a wake-up and a scheduler pass for a second
one. Everything else goes through the send loop: pushes from other tasks, producers (which may
wait on anything, and must not stop the reading), and the backlog left while it is busy. It is
started lazily, so an idle connection costs one task, and it parks on a ``ParkingLot`` between
bursts. The queue is a ``collections.deque`` rather than a memory channel: nothing ever waits
on it (the send loop parks on its own lot, so ``discard_buffers()`` can drop every item), and a
channel's state is about 1.8 KiB per connection (measured: ``docs/performance.rst``).
"""

from __future__ import annotations

import inspect
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, ClassVar, Final

import trio

from ._buffer import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    Terminator,
    TerminatorBuffer,
)
from ._producers import ProducerLike, as_bytes
from ._util import peer_name

__all__ = ["AsyncChat", "async_chat"]

logger: Final = logging.getLogger("trio_chat")

# Frames dispatched from one read between two checkpoints. A single 64 KiB read can hold ~2,000
# short frames. A checkpoint is a pass through trio's scheduler, about 3.5 us here, and a short
# frame with asynchat-style hooks costs about 0.5 us: every 64 frames it was a tenth of the time
# (benchmark W1), every 256 it is 3%, and other connections still wait at most 256 hooks' worth
# (about 0.13 ms with trivial ones) for their turn.
_FRAMES_PER_CHECKPOINT: Final = 256

# Marker queued by close_when_done(): everything queued before it is sent, then the connection
# closes.
_CLOSE: Final = object()

# How long closing after close_when_done() may take. A TLS stream sends close_notify then, so the
# peer can tell a finished reply from a truncation attack; a peer that doesn't read can stall that
# write, so it is bounded. Two seconds: longer than a loopback or LAN round trip by far, short
# enough that a server shutting down is not held up.
_GRACEFUL_CLOSE_TIMEOUT: Final = 2.0


class AsyncChat:
    """A connection handler in the style of ``asynchat.async_chat``, driven by :meth:`run`.

    Subclass it and implement :meth:`collect_incoming_data` and :meth:`found_terminator`;
    set the terminator with :meth:`set_terminator`; reply with :meth:`push`.

    Args:
        stream: the stream to talk over; it may instead be given to :meth:`run`.

    Attributes:
        ac_in_buffer_size: the most bytes one read asks the stream for.
        ac_out_buffer_size: the most queued bytes joined into one write.
        max_frame_size: the most bytes of one frame with a bytes, tuple or regex terminator
            (None: no limit); read when the handler is created and by :meth:`set_terminator`.
        out_high_water: while more than this many pushed bytes wait to be sent, the receive loop
            stops reading (it resumes at half of it).
        max_queued_bytes: when pushes made by *other* tasks (a chat room broadcasting, say) leave
            more than this many bytes waiting, the peer reads too slowly: the connection is closed
            and the reason logged (None: no limit). The handler's own pushes are bounded by
            ``out_high_water`` instead.
        idle_timeout: seconds without input after which the connection is closed and it is
            logged (None: wait forever). It also bounds how long the receive loop waits to
            write its hooks' replies to a peer that does not read.
    """

    # 64 KiB: asynchat's sizes, and what one loopback read typically returns.
    ac_in_buffer_size: ClassVar[int] = 65536
    ac_out_buffer_size: ClassVar[int] = 65536
    max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE
    # Four writes' worth: enough to keep the send loop busy while the receive loop is paused, and
    # with one read of input (ac_in_buffer_size) it bounds what a connection holds by itself.
    out_high_water: int = 4 * 65536
    # 4 MiB: sixty-four 64 KiB writes of backlog for one slow peer before it is cut off; a handler
    # that streams more than that to a peer should use push_with_producer(), which is pulled.
    max_queued_bytes: int | None = 4 * 1024 * 1024
    idle_timeout: float | None = None

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        self._stream = stream
        self._buffer = TerminatorBuffer(None, max_frame_size=self.max_frame_size)
        # Bytes, producers and _CLOSE, in push order. Created by the first push: an empty deque
        # is 624 bytes, a tenth of what an idle connection costs (benchmark W6).
        self._out: deque[object] | None = None
        self._queued = 0  # pushed bytes not yet written
        self._drained: trio.Event | None = None  # set when _queued falls to the low-water mark
        self._generation = 0  # bumped by discard_buffers(): in-flight output is abandoned
        self._closing = False  # close_when_done() was called
        self._closed = False  # close() was called or run() ended
        self._running = False
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None  # run()'s, while it runs
        self._error: Exception | None = None
        self._receive_task: trio.lowlevel.Task | None = None
        self._graceful = False  # close_when_done() finished flushing: close the stream politely
        # No task is writing or about to: a push from another task must wake the send loop.
        self._send_idle = True
        # The receive loop is running hooks synchronously: it writes their output itself next.
        self._deferred = False
        # The send loop parks here between bursts; None until it is first needed.
        self._sender: trio.lowlevel.ParkingLot | None = None
        self._flushed: trio.Event | None = None  # set when the writer becomes idle

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

    # --------------------------------------------------------------- controls

    @property
    def stream(self) -> trio.abc.Stream | None:
        """The stream this handler talks over."""
        return self._stream

    @property
    def peer(self) -> str:
        """The peer's address for log messages (``"?"`` when the stream has none)."""
        return peer_name(self._stream)

    @property
    def last_terminator(self) -> bytes | int | None:
        """What matched at the last :meth:`found_terminator`: the bytes (which member of a tuple,
        what a regex matched) or the count; None before the first."""
        found = self._buffer.last_found
        return None if found is None else found.terminator

    @property
    def queued_bytes(self) -> int:
        """Pushed bytes not yet written to the stream (producers are not counted)."""
        return self._queued

    @property
    def closed(self) -> bool:
        """Whether the connection was closed (or :meth:`close_when_done` reached)."""
        return self._closed

    def set_terminator(self, term: Terminator) -> None:
        """Set the input delimiter; it applies at once to input already received.

        *term* is bytes to search for, an int count of bytes, None (everything; ``b""`` and ``0``
        act as None), a tuple of bytes (the earliest match wins, then the longest) or a compiled
        bytes regular expression; :attr:`last_terminator` tells which bytes matched.

        Raises:
            TypeError: *term* is a ``str`` (pass bytes) or another type.
            ValueError: *term* is a negative int, or a pattern the buffer cannot search.
        """
        self._buffer.set_terminator(term)
        self._buffer.max_frame_size = self.max_frame_size

    def get_terminator(self) -> Terminator:
        """The current terminator; once a count terminator is satisfied it is ``0``."""
        return self._buffer.get_terminator()

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue *data* to be sent, as it is now; never blocks.

        Raises:
            TypeError: *data* is not bytes, bytearray or memoryview.
            trio.ClosedResourceError: the connection is closed or closing.
        """
        if data.__class__ is not bytes:
            data = as_bytes(data, "push() data")
        if self._closing or self._closed:
            self._check_open("push")
        if data:
            self._queued += len(data)
            out = self._out
            if out is None:
                out = self._out = deque()
            out.append(data)
            if self._send_idle and not self._deferred and self._nursery is not None:
                self._wake_sender()
            limit = self.max_queued_bytes
            if (
                limit is not None
                and self._queued > limit
                and self._receive_task is not None
                and trio.lowlevel.current_task() is not self._receive_task
            ):
                logger.warning(
                    "closing connection to %s: %d bytes of output are waiting, more than "
                    "max_queued_bytes=%d (the peer reads too slowly)",
                    self.peer,
                    self._queued,
                    limit,
                )
                self.close()

    def push_with_producer(self, producer: ProducerLike) -> None:
        """Queue a producer, pulled only as fast as the peer reads; never blocks.

        Accepts an object with ``more()`` (returning ``b""`` when exhausted), a bytes-like object,
        or an iterable or async iterable of bytes.

        Raises:
            TypeError: *producer* is none of these (a ``str`` must be encoded first).
            trio.ClosedResourceError: the connection is closed or closing.
        """
        if isinstance(producer, (bytes, bytearray, memoryview)):
            self.push(producer)
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
        self._check_open("push_with_producer")
        self._enqueue(producer)

    def close_when_done(self) -> None:
        """Close the connection once everything queued so far is sent; never blocks.

        Input that arrives afterwards is not processed, and later pushes raise
        ``trio.ClosedResourceError``.
        """
        if self._closing or self._closed:
            return
        self._closing = True
        self._buffer.interrupt()  # input after this is not processed
        self._enqueue(_CLOSE)

    def close(self) -> None:
        """Close the connection now, dropping queued output; never blocks."""
        if self._closed:
            return
        self._closed = True
        self._buffer.interrupt()
        self._discard_output()
        if self._scope is not None:
            self._scope.cancel()

    def discard_buffers(self) -> None:
        """Drop queued output and unprocessed input (a pending :meth:`close_when_done` stays)."""
        self._buffer.clear()
        self._discard_output()
        if self._closing and not self._closed:
            self._enqueue(_CLOSE)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        """Upgrade this connection to TLS in mid-conversation (STARTTLS).

        Call it from an ``async def found_terminator`` after pushing the reply that announces the
        upgrade. It waits until all queued output was written (in plaintext), discards every
        byte of input already received but not yet processed, wraps the stream in a
        :class:`trio.SSLStream` and completes the handshake. Discarding matters: plaintext that a
        peer (or an attacker in the middle) pipelined after the upgrade command must never be read
        as if it had come through TLS (the STARTTLS command injection hole, CVE-2011-0411).

        Raises:
            trio.BusyResourceError: not called from the receive loop (a hook).
            trio.BrokenResourceError: the handshake failed.
        """
        if trio.lowlevel.current_task() is not self._receive_task:
            raise trio.BusyResourceError(
                "start_tls() must be awaited from a hook (e.g. an async found_terminator), "
                "where the receive loop is not reading"
            )
        await self._wait_flushed()
        self._buffer.clear()
        assert self._stream is not None
        tls = trio.SSLStream(
            self._stream, ssl_context, server_side=server_side, server_hostname=server_hostname
        )
        self._stream = tls
        await tls.do_handshake()

    # ------------------------------------------------------------------- run

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        """Drive the connection until it is closed; always closes the stream.

        Runs a receive loop and (once needed) a send loop in a nursery of its own. Returns when
        the connection
        was closed (by :meth:`close`, :meth:`close_when_done`, or the peer). An exception from a
        hook (or :class:`FrameTooLongError`) closes the connection, then propagates unchanged.

        Raises:
            TypeError: no stream was given, neither here nor to the constructor.
            trio.BusyResourceError: ``run()`` is already running.
            trio.ClosedResourceError: ``run()`` already ran.
        """
        if stream is not None:
            if self._stream is not None and self._stream is not stream:
                raise ValueError("run() got a different stream than the one given to AsyncChat()")
            self._stream = stream
        if self._stream is None:
            raise TypeError("no stream to run on: pass one to AsyncChat(stream) or to run(stream)")
        if self._running:
            raise trio.BusyResourceError("this AsyncChat is already running")
        if self._scope is not None:
            raise trio.ClosedResourceError("this AsyncChat already ran; create a new one")
        self._running = True
        self._buffer.max_frame_size = self.max_frame_size
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._closed:  # close() before run(): only close the stream
                    nursery.cancel_scope.cancel()
                else:
                    self._nursery = nursery
                    try:
                        await self._receive_loop()
                    except Exception as exc:
                        self._fail(exc)
        finally:
            self._nursery = None
            self._closed = True
            self._running = False
            self._discard_output()
            # self._stream: after start_tls() it is the TLS stream wrapping the original.
            await self._close_stream(self._stream, graceful=self._graceful)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -------------------------------------------------------------- internals

    @staticmethod
    async def _close_stream(stream: trio.abc.Stream, *, graceful: bool) -> None:
        if graceful:
            with trio.move_on_after(_GRACEFUL_CLOSE_TIMEOUT):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the peer went away first: nothing left to say politely
                else:
                    return
        # Closes at once, even inside a cancelled scope.
        await trio.aclose_forcefully(stream)

    def _check_open(self, what: str) -> None:
        if self._closed or self._closing:
            raise trio.ClosedResourceError(f"{what}() on a connection that is closed or closing")

    def _enqueue(self, item: object) -> None:
        out = self._out
        if out is None:
            out = self._out = deque()
        out.append(item)
        if self._send_idle and not self._deferred and self._nursery is not None:
            self._wake_sender()

    def _wake_sender(self) -> None:
        """Hand the output queue to the send loop, starting it the first time."""
        self._send_idle = False
        if self._sender is None:
            assert self._nursery is not None
            self._sender = trio.lowlevel.ParkingLot()
            self._nursery.start_soon(self._send_loop)
        else:
            self._sender.unpark()

    def _become_idle(self) -> None:
        self._send_idle = True
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    def _discard_output(self) -> None:
        self._generation += 1
        if self._out:
            self._out.clear()
        self._set_queued(0)

    def _finish(self) -> None:
        """close_when_done()'s marker was reached: everything before it is written."""
        self._closed = True
        self._graceful = True
        assert self._scope is not None
        self._scope.cancel()

    def _lost(self, exc: Exception) -> None:
        """Writing failed: the peer reset the connection, or the stream was closed under us."""
        if isinstance(exc, trio.BrokenResourceError):
            logger.debug("connection reset by peer while sending: %r", exc)
        self.close()

    async def _wait_flushed(self) -> None:
        """Wait until every queued item was written and no task is writing."""
        while not self._send_idle or self._out:
            if self._send_idle:
                self._wake_sender()
            self._flushed = event = self._flushed or trio.Event()
            await event.wait()
        await trio.lowlevel.checkpoint()

    def _set_queued(self, n: int) -> None:
        self._queued = n
        drained = self._drained
        if drained is not None and n <= self.out_high_water // 2:
            self._drained = None
            drained.set()

    def _fail(self, exc: Exception) -> None:
        # Exceptions are kept and re-raised by run() after the stream is closed, so a hook's
        # error reaches the caller as itself rather than wrapped in an ExceptionGroup.
        if self._error is None:
            self._error = exc
        self._closed = True
        assert self._scope is not None
        self._scope.cancel()

    async def _call_hook(self, result: Awaitable[None] | None) -> None:
        if result is not None and inspect.isawaitable(result):
            await result

    async def _run_hook(self, hook: Callable[[], Awaitable[None] | None]) -> None:
        """Call a sync-or-async hook from the receive loop, writing its pushes directly."""
        self._deferred = True
        try:
            result = hook()
        finally:
            self._deferred = False
        await self._flush()
        await self._call_hook(result)

    async def _throttle(self) -> None:
        """Checkpoint, and wait while too much output is queued (backpressure)."""
        if self._queued > self.out_high_water:
            self._drained = event = self._drained or trio.Event()
            await event.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _receive_loop(self) -> None:
        self._receive_task = trio.lowlevel.current_task()
        await self._flush()  # pushes made before run()
        await self._run_hook(self.handle_connect)
        while not (self._closing or self._closed):
            if self._queued > self.out_high_water:
                await self._throttle()
                continue
            stream = self._stream  # read each time: start_tls() replaces it
            assert stream is not None
            try:
                timeout = self.idle_timeout
                if timeout is None:
                    data = await stream.receive_some(self.ac_in_buffer_size)
                else:
                    data = None
                    with trio.move_on_after(timeout):
                        data = await stream.receive_some(self.ac_in_buffer_size)
                    if data is None:
                        logger.info(
                            "closing connection to %s: no input for %s seconds (idle_timeout)",
                            self.peer,
                            timeout,
                        )
                        self.close()
                        return
            except trio.BrokenResourceError as exc:
                logger.debug("connection reset by peer while receiving: %r", exc)
                data = b""
            except trio.ClosedResourceError:
                # Someone closed our stream under us: end the connection (and the send loop).
                self.close()
                return
            if not data:
                self._buffer.feed_eof()
                result = self._deliver()
                wrote = await self._flush() if self._out else False
                await self._dispatch(result, wrote)
                if not (self._closing or self._closed):
                    await self._run_hook(self.handle_close)
                    if not (self._closing or self._closed):
                        # handle_close() kept the connection open, for output from other tasks:
                        # it lasts until close() or close_when_done() (which cancel this).
                        await trio.sleep_forever()
                return
            self._buffer.feed(data)
            # The first batch of frames is handed over here rather than in _dispatch(): a
            # request-reply exchange then costs no extra coroutine (about 0.2 us of ~8).
            result = self._deliver()
            wrote = await self._flush() if self._out else False
            if result is not NEED_DATA:
                await self._dispatch(result, wrote)

    def _deliver(self) -> object:
        """Hand buffered input to the hooks until the input is used up or a batch is done."""
        self._deferred = True
        try:
            return self._buffer.deliver(
                self.collect_incoming_data, self.found_terminator, _FRAMES_PER_CHECKPOINT
            )
        finally:
            self._deferred = False

    async def _dispatch(self, result: object, wrote: bool) -> None:
        """Go on after a :meth:`_deliver` that returned *result*, checkpointing every batch.

        *wrote*: whether the hooks' output was written since (which checkpointed).
        """
        while True:
            if result is None:  # a batch of frames done, or close() from a hook
                if not wrote or self._queued > self.out_high_water:
                    await self._throttle()
            elif result is NEED_DATA or result is END_OF_INPUT:
                return
            else:  # an async hook's coroutine
                await self._call_hook(result)  # type: ignore[arg-type]
            if self._closing or self._closed:
                return
            result = self._deliver()
            wrote = await self._flush() if self._out else False

    async def _flush(self) -> bool:
        """Write queued replies from the receive loop while the send loop is idle.

        Producers are left to the send loop. Returns whether it wrote (and so checkpointed).
        """
        out = self._out
        if not out or not self._send_idle:
            return False  # nothing to write, or the send loop is at it and takes these too
        stream = self._stream
        assert stream is not None
        self._send_idle = False  # one writer: pushes from other tasks now wait for us
        timeout = self.idle_timeout
        try:
            if timeout is None:
                if len(out) == 1 and out[0].__class__ is bytes:
                    # One reply (a request-reply exchange): written here, one coroutine less.
                    data: Any = out.popleft()
                    generation = self._generation
                    await stream.send_all(data)
                    if generation == self._generation:
                        self._set_queued(self._queued - len(data))
                else:
                    await self._write_replies(stream, out)
            else:
                # While this task waits for a peer that does not read, it is not waiting for
                # input either: the idle timeout must still close a peer that went silent.
                with trio.move_on_after(timeout) as deadline:
                    await self._write_replies(stream, out)
                if deadline.cancelled_caught:
                    logger.info(
                        "closing connection to %s: no input and a blocked write for %s seconds"
                        " (idle_timeout)",
                        self.peer,
                        timeout,
                    )
                    self.close()
                    return True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._lost(exc)
            return True
        if self._closed:
            return True  # the close marker was reached
        if out:
            self._wake_sender()
        else:
            self._become_idle()
        return True

    async def _write_replies(self, stream: trio.abc.Stream, out: deque[object]) -> None:
        """Write the queued bytes up to a producer, or up to and including the close marker.

        A burst of small pushes is joined into writes of up to ``ac_out_buffer_size`` bytes.
        """
        limit = self.ac_out_buffer_size
        while out:
            data: Any = out[0]
            if data.__class__ is not bytes:
                if data is _CLOSE:
                    out.popleft()
                    self._finish()
                return
            out.popleft()
            size = len(data)
            if size < limit and out and out[0].__class__ is bytes:
                chunks = [data]
                while size < limit and out and out[0].__class__ is bytes:
                    data = out.popleft()
                    chunks.append(data)
                    size += len(data)
                data = b"".join(chunks)
            generation = self._generation
            await stream.send_all(data)
            if generation == self._generation:  # else discard_buffers() has reset the count
                self._set_queued(self._queued - size)

    async def _send_loop(self) -> None:
        out = self._out
        sender = self._sender
        assert out is not None
        assert sender is not None
        try:
            while True:
                if not out:
                    self._become_idle()
                    await sender.park()  # _wake_sender() unparks us
                    continue
                stream = self._stream  # read each time: start_tls() replaces it
                assert stream is not None
                item = out[0]
                if item.__class__ is bytes or item is _CLOSE:
                    await self._write_replies(stream, out)
                    if self._closed:
                        return  # the close marker was reached
                else:
                    out.popleft()
                    await self._send_producer(stream, item, self._generation)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._lost(exc)
        except Exception as exc:  # a producer's error, say
            self._fail(exc)

    async def _send_producer(self, stream: trio.abc.Stream, producer: Any, generation: int) -> None:
        what = f"data from producer {producer!r}"
        more = getattr(producer, "more", None)
        if callable(more):
            while generation == self._generation:
                data = as_bytes(more(), what)
                if not data:
                    return
                await stream.send_all(data)
        elif isinstance(producer, AsyncIterable):
            chunks = aiter(producer)
            try:
                async for chunk in chunks:
                    data = as_bytes(chunk, what)
                    if data:
                        await stream.send_all(data)
                    if generation != self._generation:
                        return
            finally:
                # Finalise an async generator here, in its task, not later in the GC.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            for chunk in producer:
                data = as_bytes(chunk, what)
                if data:
                    await stream.send_all(data)
                if generation != self._generation:
                    return


#: asynchat's name for :class:`AsyncChat`.
async_chat = AsyncChat

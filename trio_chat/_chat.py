"""``AsyncChat``: asynchat's handler model on a trio stream.

Task layout of one connection (``await chat.run()``)::

    run()                       one nursery, cancelled by close()
    ├── receive loop            receive_some -> TerminatorBuffer -> hooks (in this task)
    └── send loop               memory channel of bytes / producers -> stream.send_all

Only the send loop writes to the stream. ``push()`` and friends never block: they put an item on
an unbounded memory channel and count its bytes; the receive loop stops reading while more than
``out_high_water`` bytes wait, which is what bounds memory when a peer sends without reading.
"""

from __future__ import annotations

import inspect
import logging
import math
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

__all__ = ["AsyncChat", "async_chat"]

logger: Final = logging.getLogger("trio_chat")

# Frames dispatched from one read between two checkpoints. A single 64 KiB read can hold ~2,000
# short frames; yielding every 64 frames keeps other connections' latency to a few hundred
# microseconds while costing well under 1% of the per-frame work in the benchmarks.
_FRAMES_PER_CHECKPOINT: Final = 64

# Marker queued by close_when_done(): everything queued before it is sent, then the connection
# closes.
_CLOSE: Final = object()


class AsyncChat:
    """A connection handler in the style of ``asynchat.async_chat``, driven by :meth:`run`.

    Subclass it and implement :meth:`collect_incoming_data` and :meth:`found_terminator`;
    set the terminator with :meth:`set_terminator`; reply with :meth:`push`.

    Args:
        stream: the stream to talk over; it may instead be given to :meth:`run`.

    Attributes:
        ac_in_buffer_size: the most bytes one read asks the stream for.
        ac_out_buffer_size: the most queued bytes joined into one write.
        max_frame_size: the most bytes of one frame with a ``bytes`` terminator (None: no limit);
            read when the handler is created and by :meth:`set_terminator`.
        out_high_water: while more than this many pushed bytes wait to be sent, the receive loop
            stops reading (it resumes at half of it).
    """

    # 64 KiB: asynchat's sizes, and what one loopback read typically returns.
    ac_in_buffer_size: ClassVar[int] = 65536
    ac_out_buffer_size: ClassVar[int] = 65536
    max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE
    # Four writes' worth: enough to keep the send loop busy while the receive loop is paused, and
    # with one read of input (ac_in_buffer_size) it bounds what a connection holds by itself.
    out_high_water: int = 4 * 65536

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        self._stream = stream
        self._buffer = TerminatorBuffer(None, max_frame_size=self.max_frame_size)
        self._out_send, self._out_recv = trio.open_memory_channel[object](math.inf)
        self._queued = 0  # pushed bytes not yet written
        self._drained: trio.Event | None = None  # set when _queued falls to the low-water mark
        self._generation = 0  # bumped by discard_buffers(): in-flight output is abandoned
        self._closing = False  # close_when_done() was called
        self._closed = False  # close() was called or run() ended
        self._running = False
        self._scope: trio.CancelScope | None = None
        self._error: Exception | None = None

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
    def closed(self) -> bool:
        """Whether the connection was closed (or :meth:`close_when_done` reached)."""
        return self._closed

    def set_terminator(self, term: Terminator) -> None:
        """Set the input delimiter: bytes to search for, a count of bytes, or None.

        ``b""`` and ``0`` act as None; the change applies at once to input already received.

        Raises:
            TypeError: *term* is a ``str`` (pass bytes) or another type.
            ValueError: *term* is a negative int.
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
        data = as_bytes(data, "push() data")
        self._check_open("push")
        if data:
            self._queued += len(data)
            self._out_send.send_nowait(data)

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
        self._out_send.send_nowait(producer)

    def close_when_done(self) -> None:
        """Close the connection once everything queued so far is sent; never blocks.

        Input that arrives afterwards is not processed, and later pushes raise
        ``trio.ClosedResourceError``.
        """
        if self._closing or self._closed:
            return
        self._closing = True
        self._out_send.send_nowait(_CLOSE)

    def close(self) -> None:
        """Close the connection now, dropping queued output; never blocks."""
        if self._closed:
            return
        self._closed = True
        self._discard_output()
        if self._scope is not None:
            self._scope.cancel()

    def discard_buffers(self) -> None:
        """Drop queued output and unprocessed input (a pending :meth:`close_when_done` stays)."""
        self._buffer.clear()
        self._discard_output()
        if self._closing and not self._closed:
            self._out_send.send_nowait(_CLOSE)

    # ------------------------------------------------------------------- run

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        """Drive the connection until it is closed; always closes the stream.

        Runs a receive loop and a send loop in a nursery of its own. Returns when the connection
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
        stream = self._stream
        self._running = True
        self._buffer.max_frame_size = self.max_frame_size
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._closed:  # close() before run(): only close the stream
                    nursery.cancel_scope.cancel()
                else:
                    nursery.start_soon(self._guard, self._send_loop)
                    await self._guard(self._receive_loop)
        finally:
            self._closed = True
            self._running = False
            self._discard_output()
            await trio.aclose_forcefully(stream)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -------------------------------------------------------------- internals

    def _check_open(self, what: str) -> None:
        if self._closed or self._closing:
            raise trio.ClosedResourceError(f"{what}() on a connection that is closed or closing")

    def _discard_output(self) -> None:
        self._generation += 1
        while True:
            try:
                self._out_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self._set_queued(0)

    def _set_queued(self, n: int) -> None:
        self._queued = n
        drained = self._drained
        if drained is not None and n <= self.out_high_water // 2:
            self._drained = None
            drained.set()

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        # Exceptions are kept and re-raised by run() after the stream is closed, so a hook's
        # error reaches the caller as itself rather than wrapped in an ExceptionGroup.
        try:
            await loop()
        except Exception as exc:
            if self._error is None:
                self._error = exc
            self._closed = True
            assert self._scope is not None
            self._scope.cancel()

    async def _call_hook(self, result: Awaitable[None] | None) -> None:
        if result is not None and inspect.isawaitable(result):
            await result

    async def _throttle(self) -> None:
        """Checkpoint, and wait while too much output is queued (backpressure)."""
        if self._queued > self.out_high_water:
            self._drained = event = self._drained or trio.Event()
            await event.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _receive_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        await self._call_hook(self.handle_connect())
        while not (self._closing or self._closed):
            if self._queued > self.out_high_water:
                await self._throttle()
                continue
            try:
                data = await stream.receive_some(self.ac_in_buffer_size)
            except trio.BrokenResourceError as exc:
                logger.debug("connection reset by peer while receiving: %r", exc)
                data = b""
            except trio.ClosedResourceError:
                return
            if not data:
                self._buffer.feed_eof()
                await self._dispatch()
                await self._call_hook(self.handle_close())
                return
            self._buffer.feed(data)
            await self._dispatch()

    async def _dispatch(self) -> None:
        """Hand the buffered input to the hooks, checkpointing every few frames."""
        next_event = self._buffer.next_event
        collect = self.collect_incoming_data
        found = self.found_terminator
        frames = 0
        while not (self._closing or self._closed):
            event = next_event()
            if event.__class__ is bytes:
                result = collect(event)
                if result is not None:
                    await self._call_hook(result)
            elif event is NEED_DATA or event is END_OF_INPUT:
                return
            else:
                result = found()
                if result is not None:
                    await self._call_hook(result)
                frames += 1
                if frames == _FRAMES_PER_CHECKPOINT:
                    frames = 0
                    await self._throttle()

    async def _send_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        receive = self._out_recv
        held: object = None  # an item taken off the channel while coalescing, sent next
        try:
            while True:
                if held is None:
                    item = await receive.receive()
                else:
                    item, held = held, None
                if item is _CLOSE:
                    self._closed = True
                    assert self._scope is not None
                    self._scope.cancel()
                    return
                generation = self._generation
                if item.__class__ is bytes:
                    # Coalesce what is already queued: a burst of small replies is one write.
                    chunks = [item]
                    size = len(item)
                    while size < self.ac_out_buffer_size:
                        try:
                            item = receive.receive_nowait()
                        except trio.WouldBlock:
                            break
                        if item.__class__ is not bytes:
                            held = item
                            break
                        chunks.append(item)
                        size += len(item)
                    await stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    if generation == self._generation:
                        self._set_queued(self._queued - size)
                else:
                    await self._send_producer(stream, item, generation)
        except trio.BrokenResourceError as exc:
            logger.debug("connection reset by peer while sending: %r", exc)
            self.close()
        except trio.ClosedResourceError:
            self.close()

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

"""A deliberately simple reference model of ``AsyncChat``'s observable behaviour.

It is the oracle of ``tests/test_chat_model.py``: short and slow on purpose, so that it can be
read and believed. asynchat's semantics, with the rules ``notes/CORE_API.md`` adds:

* Input, one frame at a time (asynchat's ``handle_read``): the unprocessed bytes sit in a
  ``bytearray``; each step finds the next frame with ``bytes.find`` from the start and slices it
  off. A bytes terminator is a tuple of one. A count terminator counts down and is ``0`` once
  satisfied; ``None``, ``b""`` and ``0`` hand over everything. Bytes that may still become a
  terminator are held back until more input (or EOF) decides.
* After every hook the receive loop looks at the state: once ``close_when_done()``, ``close()``
  or a hook's exception happened, no further hook runs (not even ``found_terminator()`` for the
  frame whose data was just collected) and no more input is read.
* Output: ``push()`` and friends put ``(generation, item)`` on an unbounded trio memory channel;
  the send loop writes the items in order, in pieces of at most ``ac_out_buffer_size``, pulling
  producers only when it reaches them. ``close()`` and ``discard_buffers()`` bump the generation:
  items of an older one are skipped (a producer stops between pieces).
* ``close_when_done()`` queues a close marker: output queued before it is written, then the
  stream is closed. A hook's exception does the same (what was pushed before it is written),
  then ``run()`` raises it. ``close()`` drops the queue and closes at once. (Over TCP sockets
  AsyncChat closes lingering, which memory streams, all the model knows, do not need.)
* ``connection_lost(exc)`` runs exactly once, after the stream was closed: ``None`` for an orderly
  end, the hook's exception, or the ``trio.Cancelled`` of a cancellation from outside.

Which output is observable also depends on when writes happen, which the contract leaves open:
output dropped by ``close()`` or ``discard_buffers()`` may already have been written. With
streams that never block (``trio.testing.memory_stream_pair``), everything pushed before the
handler last went idle was written; what was pushed since may or may not be. The model keeps
that as :attr:`ModelChat.expected`, checked with :func:`output_matches`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import trio

__all__ = ["ModelChat", "ModelTerminator", "RecordingStream", "Segment", "output_matches"]

#: The terminators the model knows: asynchat's three kinds, and tuples of bytes.
ModelTerminator: TypeAlias = "bytes | int | tuple[bytes, ...] | None"

#: Part of the expected output: (whether any prefix of it will do, the bytes).
Segment: TypeAlias = "tuple[bool, bytes]"

_CLOSE = object()  # close_when_done()'s marker in the output channel


class ModelChat:
    """The reference model. Same hooks and controls as ``AsyncChat`` (a subset of them)."""

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    def __init__(self) -> None:
        self.terminator: ModelTerminator = None
        self.count = 0  # the count last set, for last_terminator
        self.last_terminator: bytes | int | None = None
        self.inbuf = bytearray()  # received, not yet handed over
        self.eof = False
        self.state = "open"  # -> "closing" (flush, then close) -> "closed"
        self.error: Exception | None = None
        self.scope: trio.CancelScope | None = None
        self.generation = 0
        self.send_channel, self.receive_channel = trio.open_memory_channel[tuple[int, object]](
            math.inf
        )
        self.expected: list[Segment] = []
        self.pushed = bytearray()  # output pushed since the handler was last idle

    # ----------------------------------------------------------------- hooks

    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError

    def found_terminator(self) -> Awaitable[None] | None:
        raise NotImplementedError

    def handle_connect(self) -> Awaitable[None] | None:
        return None

    def handle_close(self) -> Awaitable[None] | None:
        self.close_when_done()
        return None

    def connection_lost(self, exc: BaseException | None) -> Awaitable[None] | None:
        return None

    # -------------------------------------------------------------- controls

    def set_terminator(self, term: ModelTerminator) -> None:
        if isinstance(term, int) and term < 0:
            raise ValueError("a count terminator must be >= 0")
        if isinstance(term, int):
            self.count = term
        self.terminator = term

    def get_terminator(self) -> ModelTerminator:
        return self.terminator

    def push(self, data: bytes | bytearray | memoryview) -> None:
        self._enqueue(bytes(data), bytes(data))

    def push_with_producer(self, producer: Any) -> None:
        if isinstance(producer, (bytes, bytearray, memoryview)):
            self._enqueue(bytes(producer), bytes(producer))
        else:
            # The model's callers say what their producer will produce (`content`).
            self._enqueue(producer, producer.content)

    def close_when_done(self) -> None:
        if self.state == "open":
            self.state = "closing"
            self.send_channel.send_nowait((self.generation, _CLOSE))

    def close(self) -> None:
        if self.state != "closed":
            self.state = "closed"
            self._drop_output()
            if self.scope is not None:
                self.scope.cancel()

    def discard_buffers(self) -> None:
        self.inbuf.clear()
        self._drop_output()
        if self.state == "closing":
            self.send_channel.send_nowait((self.generation, _CLOSE))

    def idle(self) -> None:
        """The test saw every task blocked: what was pushed so far has been written."""
        if self.pushed:
            self.expected.append((False, bytes(self.pushed)))
            self.pushed.clear()

    # ------------------------------------------------------------------- run

    async def run(self, stream: trio.abc.Stream) -> None:
        lost: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                if self.state == "closed":
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._send_loop, stream)
                try:
                    await self._receive_loop(stream)
                except Exception as exc:
                    self._fail(exc)
        except BaseException as exc:  # cancelled from outside: a Cancelled, or a group of them
            lost = _cancelled_in(exc)
            raise
        finally:
            self.state = "closed"
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            result = self.connection_lost(self.error or lost)
            if inspect.isawaitable(result):
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await result
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------- internals

    def _enqueue(self, item: object, content: bytes) -> None:
        if self.state != "open":
            raise trio.ClosedResourceError("push on a connection that is closed or closing")
        self.pushed += content
        self.send_channel.send_nowait((self.generation, item))

    def _drop_output(self) -> None:
        self.generation += 1
        if self.pushed:  # it may have been written, or only part of it
            self.expected.append((True, bytes(self.pushed)))
            self.pushed.clear()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.close_when_done()  # what hooks pushed before the error is still written

    async def _hook(self, hook: Callable[..., Awaitable[None] | None], *args: Any) -> None:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result

    async def _receive_loop(self, stream: trio.abc.Stream) -> None:
        await self._hook(self.handle_connect)
        while self.state == "open":
            try:
                data = await stream.receive_some(self.ac_in_buffer_size)
            except trio.BrokenResourceError:
                data = b""
            if self.state != "open":
                return
            self.inbuf += data
            self.eof = not data
            while self.state == "open" and await self._step():
                pass
            if self.eof:
                if self.state == "open":
                    await self._hook(self.handle_close)
                if self.state == "open":
                    await trio.sleep_forever()  # until another task closes
                return

    async def _step(self) -> bool:
        """Hand over the next piece of the current frame; whether there may be more to do."""
        term = self.terminator
        if not self.inbuf:
            return False
        if not term:  # None, b"" or 0: everything
            data = bytes(self.inbuf)
            self.inbuf.clear()
            await self._hook(self.collect_incoming_data, data)
            return True
        if isinstance(term, int):
            count = self.count  # a hook may set another count
            data = bytes(self.inbuf[:term])
            del self.inbuf[:term]
            self.terminator = term - len(data)
            await self._hook(self.collect_incoming_data, data)
            if term == len(data):
                await self._found(count)
            return True
        terms = term if isinstance(term, tuple) else (term,)
        buf = bytes(self.inbuf)
        matches = [(buf.find(t), -len(t), t) for t in terms if t in buf]
        # Bytes that are a proper prefix of a terminator may still become one: held back.
        held = 0 if self.eof else max(_prefix_at_end(buf, t) for t in terms)
        keep = len(buf) - held
        if matches and min(matches)[0] < keep:  # nothing unfinished starts at or before it
            start, _, matched = min(matches)  # the earliest, then the longest
            del self.inbuf[: start + len(matched)]
            if start:
                await self._hook(self.collect_incoming_data, buf[:start])
            await self._found(matched)
            return True
        if keep:
            del self.inbuf[:keep]
            await self._hook(self.collect_incoming_data, buf[:keep])
            return True  # the hook may have changed the terminator: look again at once
        return False

    async def _found(self, matched: bytes | int) -> None:
        if self.state == "open":
            self.last_terminator = matched
            await self._hook(self.found_terminator)

    async def _send_loop(self, stream: trio.abc.Stream) -> None:
        try:
            async for generation, item in self.receive_channel:
                if generation != self.generation:
                    continue  # dropped by close() or discard_buffers()
                if item is _CLOSE:
                    self.state = "closed"
                    assert self.scope is not None
                    self.scope.cancel()
                    return
                await self._write(stream, generation, item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    async def _write(self, stream: trio.abc.Stream, generation: int, item: Any) -> None:
        """Write what *item* produces, pulling a producer only when its turn comes."""

        async def send(data: bytes) -> None:
            size = self.ac_out_buffer_size
            for i in range(0, len(data), size):
                if generation != self.generation:
                    return  # dropped: stop between pieces
                await stream.send_all(data[i : i + size])

        if isinstance(item, bytes):
            await send(item)
        elif callable(getattr(item, "more", None)):
            while generation == self.generation and (data := item.more()):
                await send(bytes(data))
        elif isinstance(item, AsyncIterable):
            async for data in item:
                await send(bytes(data))
                if generation != self.generation:
                    break
        else:
            assert isinstance(item, Iterable)
            for data in item:
                await send(bytes(data))
                if generation != self.generation:
                    break


def _prefix_at_end(buf: bytes, term: bytes) -> int:
    """The length of the longest proper prefix of *term* that *buf* ends with."""
    return max((n for n in range(1, len(term)) if buf.endswith(term[:n])), default=0)


def _cancelled_in(exc: BaseException) -> BaseException:
    while not isinstance(exc, trio.Cancelled) and getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def output_matches(expected: list[Segment], data: bytes) -> bool:
    """Whether *data* is the expected segments in order, each optional one cut anywhere."""

    def match(i: int, pos: int) -> bool:
        if i == len(expected):
            return pos == len(data)
        optional, segment = expected[i]
        if not optional:
            return data.startswith(segment, pos) and match(i + 1, pos + len(segment))
        return any(
            data.startswith(segment[:n], pos) and match(i + 1, pos + n)
            for n in range(len(segment), -1, -1)
        )

    return match(0, 0)


class RecordingStream(trio.abc.HalfCloseableStream):
    """Passes everything to *inner*, keeping each ``send_all``'s bytes and whether it was closed
    (for tests that watch what a handler hands to the wire)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))  # before the write: what was handed to the wire
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        assert isinstance(self.inner, trio.abc.HalfCloseableStream)
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()

"""The output side of one connection: the queue, its byte count, and who may write it.

The queue holds, in push order, bytes, producers and two kinds of markers: :data:`CLOSE`
(``close_when_done()``: everything before it is written, then the connection closes) and a
:class:`TLSSwitch` (``start_tls()``: everything before it goes out in plaintext, everything
after it through TLS, whichever task pushed it). ``write_queued`` is the one loop that writes
queued bytes; the receive loop and the send loop both use it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, Final

import trio

from ._producers import as_bytes

__all__ = ["CLOSE", "Output", "StalledError", "TLSSwitch"]

#: What writes one piece of output to the peer (the connection's ``send_all`` with its timeout).
Send = Callable[[Any], Awaitable[None]]


class StalledError(Exception):
    """A write made no progress for ``idle_timeout`` seconds."""


class _Close:
    """The marker ``close_when_done()`` queues."""

    def __repr__(self) -> str:
        return "CLOSE"


CLOSE: Final = _Close()


class TLSSwitch:
    """The marker ``start_tls()`` queues: the send loop stops there until the switch is done."""

    __slots__ = ("done", "reached")

    def __init__(self) -> None:
        self.reached = trio.Event()  # set by the writer when everything before it is written
        self.done = trio.Event()  # set by start_tls() when the stream is switched


class Output:
    """The output queue of one connection, and the right to write it.

    Invariants:

    * ``items`` is None until the first push: an idle connection does not pay for a deque.
    * ``queued`` is the length of the bytes in ``items``, plus the unwritten rest of the bytes a
      writer took from ``items`` and is writing now. Producers are not counted.
    * ``writing`` is True exactly while one task owns the right to write: the receive loop
      (through a dispatch of its hooks and the write after it) or the send loop (from its
      wake-up until it finds the queue empty). Only the owner writes to the stream. A push
      while nobody owns it must hand the queue to the send loop (see :meth:`claim`).
    * ``generation`` changes whenever the queue is discarded: a write that began before stops
      after its current piece and leaves ``queued`` alone.
    """

    __slots__ = ("_drained", "_low_water", "generation", "items", "queued", "writing")

    def __init__(self) -> None:
        self.items: deque[object] | None = None
        self.queued = 0
        self.writing = False
        self.generation = 0
        self._drained: trio.Event | None = None
        self._low_water = 0

    def claim(self) -> bool:
        """Take the right to write if nobody has it; returns whether this call took it."""
        if self.writing:
            return False
        self.writing = True
        return True

    def add(self, data: bytes) -> None:
        """Queue bytes (non-empty)."""
        items = self.items
        if items is None:
            items = self.items = deque()
        items.append(data)
        self.queued += len(data)

    def put(self, item: object) -> None:
        """Queue a producer or a marker."""
        items = self.items
        if items is None:
            items = self.items = deque()
        items.append(item)

    def pop(self) -> None:
        """Drop the head of the queue (a producer or marker its writer has taken)."""
        assert self.items
        self.items.popleft()

    def discard(self) -> None:
        """Drop every queued byte and producer; markers stay, so a pending close or TLS switch
        still happens."""
        self.generation += 1
        items = self.items
        if items:
            markers = [item for item in items if item is CLOSE or item.__class__ is TLSSwitch]
            items.clear()
            items.extend(markers)
        self._set_queued(0)

    def _set_queued(self, n: int) -> None:
        self.queued = n
        drained = self._drained
        if drained is not None and n <= self._low_water:
            self._drained = None
            drained.set()

    async def wait_drained(self, low_water: int) -> None:
        """Wait until at most *low_water* bytes are queued."""
        if self.queued > low_water:
            self._low_water = low_water
            self._drained = event = self._drained or trio.Event()
            await event.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def write_queued(self, send: Send, chunk: int, budget: int | None = None) -> object:
        """Write the bytes at the head of the queue until it is empty or its head is a producer
        or a marker, which it returns (None: empty); with a *budget*, also stop once that many
        bytes were written and return the bytes at the head. If a write fails (the peer reset the
        connection, the stream was closed, or *send* raised :class:`StalledError`), it returns
        that exception instead: the caller decides what it means for the connection.

        Small pushes are joined into writes of at most *chunk* bytes and larger ones are written
        in pieces of *chunk* bytes, so a ``discard_buffers()`` takes effect between pieces.
        """
        items = self.items
        try:
            while items:  # None or empty: nothing to write
                data: Any = items[0]
                if data.__class__ is not bytes or (budget is not None and budget <= 0):
                    return data
                items.popleft()
                size = len(data)
                if items and size < chunk and items[0].__class__ is bytes:
                    parts = [data]
                    while items and items[0].__class__ is bytes and size + len(items[0]) <= chunk:
                        data = items.popleft()
                        parts.append(data)
                        size += len(data)
                    data = b"".join(parts)
                if budget is not None:
                    budget -= size
                if size <= chunk:  # the usual case, without a coroutine more per write
                    generation = self.generation
                    await send(data)
                    if generation == self.generation:
                        self._set_queued(self.queued - size)
                else:
                    await self._write_pieces(data, send, chunk, counted=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, StalledError) as exc:
            return exc
        return None

    async def _write_pieces(self, data: Any, send: Send, chunk: int, *, counted: bool) -> bool:
        """Write *data* in pieces of at most *chunk* bytes, as asynchat did, so a
        ``discard_buffers()`` takes effect between pieces; returns False if it did.

        *counted*: the bytes are in ``queued`` (pushed bytes), to be taken off as written.
        """
        generation = self.generation
        size = len(data)
        view = memoryview(data) if size > chunk else data
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            await send(piece)
            if generation != self.generation:
                return False
            if counted:
                self._set_queued(self.queued - len(piece))
        return True

    async def write_producer(self, producer: Any, send: Send, chunk: int) -> None:
        """Pull *producer* and write what it gives (in pieces of at most *chunk* bytes), each
        piece only after the previous one was written; stops early when the queue is
        discarded."""
        generation = self.generation
        what = f"data from producer {producer!r}"
        more = getattr(producer, "more", None)
        if callable(more):
            while generation == self.generation:
                data = as_bytes(more(), what)
                if not data:
                    return
                await self._write_pieces(data, send, chunk, counted=False)
        elif isinstance(producer, AsyncIterable):
            pieces = aiter(producer)
            try:
                async for piece in pieces:
                    data = as_bytes(piece, what)
                    if data and not await self._write_pieces(data, send, chunk, counted=False):
                        return
                    if generation != self.generation:
                        return
            finally:
                # Finalise an async generator here, in its task, not later in the GC.
                aclose = getattr(pieces, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            for piece in producer:
                data = as_bytes(piece, what)
                if data and not await self._write_pieces(data, send, chunk, counted=False):
                    return
                if generation != self.generation:
                    return

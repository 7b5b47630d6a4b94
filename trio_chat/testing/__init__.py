r"""Test protocol handlers in memory: no sockets, no clock, and every chunking you like.

:func:`open_peer` runs a handler (an :class:`~trio_chat.AsyncChat`, or an async function
taking a stream, such as a task using :class:`~trio_chat.FramedStream`) over an in-memory
connection and hands the test the other end, a :class:`Peer`: a ``FramedStream`` that reads
what the handler sent, plus helpers to send input in chosen chunks.

Each ``send_all`` to the handler arrives as its own read (the connection has no buffer in that
direction: ``send_all`` returns once the handler has read every byte), so the chunking a test
chooses is the chunking the handler sees. The handler's output is buffered without limit, so a
handler never blocks on a test that has not read yet.

For example, with the key-value handler of ``examples/kv_chat.py``, which ends its replies with
``\r\n`` (the docs' "Test a handler" how-to has more)::

    import trio
    from kv_chat import KVChat

    from trio_chat.testing import every_split, exchange, open_peer

    async def test_get_after_set() -> None:
        with trio.fail_after(5):
            async with open_peer(KVChat()) as peer:
                await peer.send_all(b"SET a 1\nGET a\n")
                assert await peer.receive_until(b"\r\n") == b"OK"
                assert await peer.receive_until(b"\r\n") == b"VALUE 1"

    async def test_any_split_gives_the_same_replies() -> None:
        with trio.fail_after(5):
            for chunks in every_split(b"SET a 1\nGET a\n"):
                assert await exchange(KVChat(), chunks) == b"OK\r\nVALUE 1\r\n"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import trio
import trio.testing

from .._buffer import DEFAULT_MAX_FRAME_SIZE
from .._chat import AsyncChat
from .._framed import HalfCloseableFramedStream

__all__ = ["Peer", "Target", "byte_by_byte", "every_split", "exchange", "open_peer"]

#: What :func:`open_peer` runs: an ``AsyncChat`` (``await handler.run(stream)``) or an async
#: function that takes the stream (``await target(stream)``; the stream is closed after it).
# A runtime alias, not a string: user code annotated with it must work with get_type_hints().
Target: TypeAlias = AsyncChat | Callable[[trio.abc.Stream], Awaitable[object]]


class Peer(HalfCloseableFramedStream):
    r"""The test's end of the connection to a handler.

    A :class:`~trio_chat.FramedStream` (``receive_until``, ``receive_exactly``, ``receive_some``
    read what the handler sent; ``send_all`` writes to it; ``send_eof`` ends its input; ``aclose``
    closes this end), plus :meth:`send_chunks` and :meth:`receive_all_until_eof`.

    ``send_all`` returns once the handler has read every byte, and raises
    :class:`trio.BrokenResourceError` if the handler closed its end first.

    Attributes:
        handler_stream: the handler's end; close it to simulate the connection failing under
            the handler (``await peer.handler_stream.aclose()``).
    """

    handler_stream: trio.abc.HalfCloseableStream

    async def send_chunks(self, chunks: Iterable[bytes]) -> None:
        r"""Send each chunk with its own ``send_all``: the handler reads each one separately.

        For example::

            await peer.send_chunks([b"GE", b"T a\n"])   # a request split in two reads
        """
        for chunk in chunks:
            await self.send_all(chunk)

    async def receive_all_until_eof(self) -> bytes:
        r"""Everything the handler sends from now until it closes its end (or half-closes it).

        For example::

            await peer.send_all(b"QUIT\n")
            assert await peer.receive_all_until_eof() == b"BYE\r\n"
        """
        chunks = []
        while data := await self.receive_some():
            chunks.append(data)
        return b"".join(chunks)


async def _run_target(target: Target, stream: trio.abc.Stream) -> None:
    if isinstance(target, AsyncChat):
        await target.run(stream)  # it closes the stream itself
        return
    try:
        await target(stream)
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_peer(
    target: Target, *, max_bytes: int | None = DEFAULT_MAX_FRAME_SIZE
) -> AsyncIterator[Peer]:
    r"""Run *target* over an in-memory connection; yield the test's end of it.

    On leaving the ``async with`` block normally, the peer sends EOF (so a handler waiting for
    input finishes) and waits for the handler to return, then closes its end. If the block
    raises, the handler is cancelled. If the handler raises, the block is cancelled and the
    handler's exception propagates from the ``async with`` as itself (not in an
    ``ExceptionGroup``), so ``pytest.raises(FrameTooLongError)`` works around it.

    Args:
        target: an :class:`~trio_chat.AsyncChat`, or an async function taking a
            :class:`trio.abc.Stream` (it may wrap it in a :class:`~trio_chat.FramedStream`).
        max_bytes: the frame limit of the peer's ``receive_until``.

    For example::

        async def echo_lines(stream: trio.abc.Stream) -> None:
            framed = trio_chat.FramedStream(stream)
            async for line in framed.frames(b"\n"):
                await framed.send_all(line + b"\n")

        async with open_peer(echo_lines) as peer:
            await peer.send_chunks([b"he", b"llo\nwor", b"ld\n"])
            assert await peer.receive_until(b"\n") == b"hello"
            assert await peer.receive_until(b"\n") == b"world"
    """
    to_handler_send, to_handler_receive = trio.testing.lockstep_stream_one_way_pair()
    to_peer_send, to_peer_receive = trio.testing.memory_stream_one_way_pair()
    handler_stream = trio.StapledStream(to_peer_send, to_handler_receive)
    peer = Peer(trio.StapledStream(to_handler_send, to_peer_receive), max_bytes=max_bytes)
    peer.handler_stream = handler_stream
    handler_error: Exception | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def run_handler() -> None:
                nonlocal handler_error
                try:
                    await _run_target(target, handler_stream)
                except Exception as exc:
                    handler_error = exc
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_handler)
            try:
                yield peer
            except BaseException as exc:
                # Kept and re-raised after the nursery, so it is not wrapped in an ExceptionGroup.
                body_error = exc
                nursery.cancel_scope.cancel()
            else:
                await peer.send_eof()
    finally:
        await trio.aclose_forcefully(peer)
    if handler_error is not None:
        raise handler_error
    if body_error is not None:
        raise body_error


async def exchange(target: Target, data: bytes | Iterable[bytes]) -> bytes:
    r"""Send *data* to *target*, then EOF; return everything it sent until it closed.

    *data* is bytes (one read) or an iterable of chunks (one read each, see
    :func:`every_split` and :func:`byte_by_byte`). If the handler closes before reading all
    of it (after a ``QUIT``, say), the rest is not sent.

    For example::

        for chunks in every_split(b"GET a\nQUIT\n"):
            assert await exchange(KVChat(), chunks) == b"NOT_FOUND\r\nBYE\r\n"
    """
    chunks = [data] if isinstance(data, bytes) else data
    async with open_peer(target) as peer:
        try:
            await peer.send_chunks(chunks)
            await peer.send_eof()
        except trio.BrokenResourceError:
            pass  # the handler closed first; what it sent is still readable
        return await peer.receive_all_until_eof()


def every_split(data: bytes) -> Iterator[list[bytes]]:
    """Yield *data* whole, then split in two at every position: ``[data[:i], data[i:]]``.

    Each chunking delivers the same bytes, so a handler must answer each one the same way.

    For example::

        >>> list(every_split(b"abc"))
        [[b'abc'], [b'a', b'bc'], [b'ab', b'c']]
    """
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def byte_by_byte(data: bytes) -> list[bytes]:
    """*data* as one-byte chunks, the hardest chunking for a framer.

    For example::

        >>> byte_by_byte(b"ab\\n")
        [b'a', b'b', b'\\n']
    """
    return [data[i : i + 1] for i in range(len(data))]

"""Tests of trio_chat.testing: the in-memory harness for protocol handlers."""

from __future__ import annotations

import doctest

import pytest
import trio
import trio.testing

import trio_chat.testing
from trio_chat import AsyncChat, FramedStream, FrameTooLongError
from trio_chat.testing import Peer, byte_by_byte, every_split, exchange, open_peer


class Echo(AsyncChat):
    """Echoes every line back, upper-cased."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[bytes] = []
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        self.push(b"".join(self.pieces).upper() + b"\n")
        self.pieces.clear()


async def echo_task(stream: trio.abc.Stream) -> None:
    framed = FramedStream(stream)
    async for line in framed.frames(b"\n"):
        await framed.send_all(line.upper() + b"\n")


@pytest.mark.parametrize("make", [Echo, lambda: echo_task], ids=["AsyncChat", "task"])
async def test_open_peer_runs_a_handler_or_a_task(make: object) -> None:
    with trio.fail_after(5):
        async with open_peer(make()) as peer:  # type: ignore[operator]
            assert isinstance(peer, Peer)
            await peer.send_chunks([b"he", b"llo\nwor", b"ld\n"])
            assert await peer.receive_until(b"\n") == b"HELLO"
            assert await peer.receive_until(b"\n") == b"WORLD"


async def test_each_chunk_is_its_own_read() -> None:
    reads: list[bytes] = []

    async def record(stream: trio.abc.Stream) -> None:
        while data := await stream.receive_some():
            reads.append(bytes(data))

    with trio.fail_after(5):
        async with open_peer(record) as peer:
            await peer.send_chunks([b"a", b"bc", b"", b"def"])
        assert reads == [b"a", b"bc", b"def"]


async def test_leaving_the_block_sends_eof_and_waits_for_the_handler() -> None:
    finished = trio.Event()

    async def until_eof(stream: trio.abc.Stream) -> None:
        while await stream.receive_some():
            pass
        await stream.send_all(b"bye\n")
        finished.set()

    with trio.fail_after(5):
        async with open_peer(until_eof) as peer:
            await peer.send_all(b"x")
        assert finished.is_set()


async def test_send_eof_lets_the_handler_answer_before_closing() -> None:
    with trio.fail_after(5):
        async with open_peer(Echo()) as peer:
            await peer.send_all(b"last\n")
            await peer.send_eof()
            assert await peer.receive_all_until_eof() == b"LAST\n"


async def test_handler_errors_propagate_as_themselves() -> None:
    class Strict(Echo):
        max_frame_size = 4

    with trio.fail_after(5):
        with pytest.raises(FrameTooLongError, match="more than 4 bytes"):
            async with open_peer(Strict()) as peer:
                await peer.send_all(b"too long\n")
                await trio.sleep_forever()  # cancelled when the handler fails


async def test_errors_in_the_block_propagate_as_themselves_and_cancel_the_handler() -> None:
    cancelled = False

    async def forever(stream: trio.abc.Stream) -> None:
        nonlocal cancelled
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled = True
            raise

    with trio.fail_after(5):
        with pytest.raises(KeyError, match="from the test"):
            async with open_peer(forever):
                await trio.testing.wait_all_tasks_blocked()
                raise KeyError("from the test")
    assert cancelled


async def test_closing_the_handler_side() -> None:
    # The connection fails under the handler: its next receive raises ClosedResourceError.
    seen: list[str] = []

    async def reader(stream: trio.abc.Stream) -> None:
        try:
            await FramedStream(stream).receive_until(b"\n")
        except trio.ClosedResourceError:
            seen.append("closed")

    with trio.fail_after(5):
        async with open_peer(reader) as peer:
            await trio.testing.wait_all_tasks_blocked()
            await peer.handler_stream.aclose()
            assert await peer.receive_all_until_eof() == b""
    assert seen == ["closed"]


async def test_exchange_stops_sending_when_the_handler_closes() -> None:
    async def first_line_only(stream: trio.abc.Stream) -> None:
        framed = FramedStream(stream)
        line = await framed.receive_until(b"\n")
        await framed.send_all(b"got " + line + b"\n")

    with trio.fail_after(5):
        assert await exchange(first_line_only, [b"one\n", b"two\n", b"three\n"]) == b"got one\n"
        assert await exchange(Echo(), b"a\nb\n") == b"A\nB\n"


async def test_every_split_and_byte_by_byte_drive_the_same_transcript() -> None:
    with trio.fail_after(5):
        for chunks in [*every_split(b"ab\ncd\n"), byte_by_byte(b"ab\ncd\n")]:
            assert await exchange(echo_task, chunks) == b"AB\nCD\n"


def test_splitters() -> None:
    assert list(every_split(b"abc")) == [[b"abc"], [b"a", b"bc"], [b"ab", b"c"]]
    assert list(every_split(b"")) == [[b""]]
    assert byte_by_byte(b"ab\n") == [b"a", b"b", b"\n"]


def test_docstring_examples() -> None:
    assert doctest.testmod(trio_chat.testing).failed == 0

"""Tests of FramedStream: trio's stream conformance suite, framing, errors, checkpoints,
cancellation and chunking independence."""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import (
    Delimiter,
    FramedStream,
    FrameTooLongError,
    HalfCloseableFramedStream,
    IncompleteFrameError,
)
from trio_chat.testing import byte_by_byte, every_split, exchange, open_peer

# ------------------------------------------------------------------ conformance


async def memory_pair() -> tuple[FramedStream, FramedStream]:
    left, right = trio.testing.memory_stream_pair()
    return FramedStream(left), FramedStream(right)


async def lockstep_pair() -> tuple[FramedStream, FramedStream]:
    left, right = trio.testing.lockstep_stream_pair()
    return FramedStream(left), FramedStream(right)


async def socket_pair() -> tuple[FramedStream, FramedStream]:
    left, right = trio.socket.socketpair()
    return FramedStream(trio.SocketStream(left)), FramedStream(trio.SocketStream(right))


@pytest.mark.parametrize("maker", [memory_pair, socket_pair], ids=["memory", "socketpair"])
async def test_conformance_half_closeable_stream(
    maker: Callable[[], Awaitable[tuple[FramedStream, FramedStream]]],
) -> None:
    # Both makers return HalfCloseableFramedStreams (FramedStream() picks the class).
    with trio.fail_after(30):
        await trio.testing.check_half_closeable_stream(maker, lockstep_pair)  # type: ignore[arg-type]


async def test_conformance_two_way_stream_over_a_plain_stream() -> None:
    async def plain_pair() -> tuple[FramedStream, FramedStream]:
        left, right = trio.testing.lockstep_stream_pair()  # StapledStreams of non-half-closeable
        return FramedStream(left), FramedStream(right)

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(memory_pair, plain_pair)


def test_half_closeable_only_when_the_wrapped_stream_is() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    plain = FramedStream(trio.StapledStream(send, receive))  # StapledStream can half-close
    assert isinstance(plain, HalfCloseableFramedStream)

    class OnlyStream(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...
        async def wait_send_all_might_not_block(self) -> None: ...
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return b""

        async def aclose(self) -> None: ...

    framed = FramedStream(OnlyStream())
    assert type(framed) is FramedStream
    assert not isinstance(framed, trio.abc.HalfCloseableStream)
    assert not hasattr(framed, "send_eof")
    with pytest.raises(TypeError, match=r"wraps a trio\.abc\.Stream, not 'bytes'"):
        FramedStream(b"")  # type: ignore[arg-type]


# ------------------------------------------------------------------ framing


async def feeding(
    data: bytes | list[bytes], *, max_bytes: int | None = 65536
) -> tuple[object, FramedStream]:
    """A FramedStream over a memory stream already holding *data* (then EOF)."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    for chunk in [data] if isinstance(data, bytes) else data:
        await send.send_all(chunk)
    await send.aclose()
    stream = trio.StapledStream(trio.testing.MemorySendStream(), receive)
    return send, FramedStream(stream, max_bytes=max_bytes)


async def test_receive_until_bytes_tuple_and_regex() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"a\r\nb\nc\r\nd;;e")
        assert await framed.receive_until(b"\r\n") == b"a"
        assert framed.last_delimiter == b"\r\n"
        assert await framed.receive_until((b"\r\n", b"\n")) == b"b"
        assert framed.last_delimiter == b"\n"
        assert await framed.receive_until(re.compile(rb"\r?\n")) == b"c"
        assert framed.last_delimiter == b"\r\n"
        assert await framed.receive_until(re.compile(rb";+")) == b"d"
        assert framed.last_delimiter == b";;"
        assert await framed.receive_some() == b"e"
        assert await framed.receive_some() == b""


async def test_receive_exactly_and_receive_some_share_the_buffer() -> None:
    with trio.fail_after(5):
        _, framed = await feeding([b"5\nhel", b"lo", b"rest"])
        assert int(await framed.receive_until(b"\n")) == 5
        assert await framed.receive_exactly(5) == b"hello"
        assert await framed.receive_exactly(0) == b""
        assert await framed.receive_some(2) == b"re"
        assert framed.buffered == 2
        assert await framed.receive_some() == b"st"
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_exactly(1)


async def test_end_of_input_between_frames_and_inside_one() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"one\ntw")
        assert await framed.receive_until(b"\n") == b"one"
        with pytest.raises(IncompleteFrameError, match="after 2 bytes") as info:
            await framed.receive_until(b"\n")
        assert info.value.partial == b"tw"
        assert info.value.terminator == b"\n"
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_until(b"\n")
        assert await framed.receive_some() == b""

        _, framed = await feeding(b"abc\r")  # the held-back b"\r" belongs to the partial frame
        with pytest.raises(IncompleteFrameError) as info:
            await framed.receive_until(b"\r\n")
        assert info.value.partial == b"abc\r"

        _, framed = await feeding(b"abc")
        with pytest.raises(IncompleteFrameError) as info:
            await framed.receive_exactly(5)
        assert (info.value.partial, info.value.terminator) == (b"abc", 5)


async def test_frames_iterates_until_the_end() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(byte_by_byte(b"a\nbb\n\nccc\n"))
        assert [frame async for frame in framed.frames(b"\n")] == [b"a", b"bb", b"", b"ccc"]
        _, framed = await feeding(b"a\nb")
        with pytest.raises(IncompleteFrameError):
            async for _ in framed.frames(b"\n"):
                pass


async def test_frame_too_long_leaves_every_byte_readable() -> None:
    with trio.fail_after(5):
        _, framed = await feeding([b"abcd", b"efgh\nnext\n"], max_bytes=5)
        with pytest.raises(FrameTooLongError, match="more than 5 bytes") as info:
            await framed.receive_until(b"\n")
        assert (info.value.limit, info.value.terminator) == (5, b"\n")
        assert framed.buffered == 14  # as anyio: nothing is consumed
        assert await framed.receive_until(b"\n", max_bytes=8) == b"abcdefgh"
        assert await framed.receive_until(b"\n") == b"next"


async def test_max_bytes_default_and_per_call() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"12345\n123456\n", max_bytes=5)
        assert framed.max_bytes == 5
        assert await framed.receive_until(b"\n") == b"12345"
        with pytest.raises(FrameTooLongError):
            await framed.receive_until(b"\n")
        framed.max_bytes = None
        assert await framed.receive_until(b"\n") == b"123456"
        with pytest.raises(ValueError, match="max_bytes must be >= 0"):
            await framed.receive_until(b"\n", max_bytes=-1)
        with pytest.raises(ValueError, match="max_frame_size must be >= 0"):
            framed.max_bytes = -1


async def test_bad_arguments_speak() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"x")
        with pytest.raises(TypeError, match=r"not 'int'; use receive_exactly\(n\)"):
            await framed.receive_until(4)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"not 'NoneType'; use receive_some\(\)"):
            await framed.receive_until(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty delimiter"):
            await framed.receive_until(b"")
        with pytest.raises(TypeError, match=r"encode it: b'\\n'"):
            await framed.receive_until("\n")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="backreference"):
            await framed.receive_until(re.compile(rb"(a)\1"))
        with pytest.raises(ValueError, match="n >= 0"):
            await framed.receive_exactly(-1)
        with pytest.raises(ValueError, match="receive_size must be >= 1"):
            FramedStream(trio.testing.memory_stream_pair()[0], receive_size=0)
        assert await framed.receive_some() == b"x"  # nothing was lost


async def test_every_receive_method_checkpoints_even_when_data_is_buffered() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"a\nbcdefgh\nrest")
        await framed.receive_some(1)  # the buffer now holds the rest
        with trio.testing.assert_checkpoints():
            assert await framed.receive_until(b"\n") == b""
        with trio.testing.assert_checkpoints():
            assert await framed.receive_exactly(2) == b"bc"
        with trio.testing.assert_checkpoints():
            assert await framed.receive_until(re.compile(rb"\n")) == b"defgh"
        with trio.testing.assert_checkpoints():
            assert await framed.receive_some(1) == b"r"
        with trio.testing.assert_checkpoints():
            assert await framed.receive_exactly(0) == b""


async def test_two_receivers_at_once_are_refused() -> None:
    with trio.fail_after(5):
        _left, right = trio.testing.memory_stream_pair()
        framed = FramedStream(right)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(framed.receive_until, b"\n")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError, match="already receiving"):
                await framed.receive_exactly(1)
            nursery.cancel_scope.cancel()


async def test_cancellation_loses_no_bytes() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        framed = FramedStream(right)
        await left.send_all(b"first pa")
        with trio.move_on_after(0):
            await framed.receive_until(b"\n")  # cancelled at once
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await framed.receive_until(b"\n")
        async with trio.open_nursery() as nursery:

            async def cancel_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_soon)
            await framed.receive_until(b"\n")  # took b"first pa" from the buffer, then waited
        await left.send_all(b"rt\nsecond part\n")
        assert await framed.receive_until(b"\n") == b"first part"  # the same request continues
        with trio.move_on_after(0):
            await framed.receive_until(b"\r\n")
        await left.send_all(b"third")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_soon)
            await framed.receive_until(b"!")  # takes b"second part\nthird", then waits
        assert await framed.receive_until(b"\n") == b"second part"  # another request: rewound
        assert await framed.receive_some() == b"third"


async def test_closed_stream_refuses_and_drops_its_buffer() -> None:
    with trio.fail_after(5):
        _, framed = await feeding(b"a\nb\n")
        assert await framed.receive_until(b"\n") == b"a"
        await framed.aclose()
        assert framed.buffered == 0
        for receive in (
            framed.receive_some(),
            framed.receive_until(b"\n"),
            framed.receive_exactly(1),
        ):
            with pytest.raises(trio.ClosedResourceError, match="FramedStream was closed"):
                await receive
        await framed.aclose()  # twice is fine


async def test_transport_stream_is_the_wrapped_one() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert FramedStream(left).transport_stream is left


# ------------------------------------------------------------ chunking independence


async def lines_task(stream: trio.abc.Stream) -> None:
    """Replies with each frame's length and delimiter: a transcript of the framing."""
    framed = FramedStream(stream, max_bytes=None)
    delimiter: Delimiter = (b"\r\n", b"\n")
    try:
        while True:
            frame = await framed.receive_until(delimiter)
            await framed.send_all(b"%d %r\n" % (len(frame), framed.last_delimiter))
            if frame.startswith(b"N"):  # a length-prefixed body follows: N<n>
                body = await framed.receive_exactly(int(frame[1:]))
                await framed.send_all(b"body %r\n" % body)
            if frame == b"R":
                delimiter = re.compile(rb"\.\r?\n")
    except trio.EndOfChannel:
        await framed.send_all(b"end\n")
    except IncompleteFrameError as exc:
        await framed.send_all(b"incomplete %r\n" % exc.partial)


async def test_every_split_of_a_session_gives_the_same_transcript() -> None:
    data = b"a\r\nbb\nN3\nxyzR\n\nline.\nother.\r\n tail"
    with trio.fail_after(30):
        whole = await exchange(lines_task, data)
        assert whole.endswith(b"incomplete b' tail'\n")
        for chunks in [*every_split(data), byte_by_byte(data)]:
            assert await exchange(lines_task, chunks) == whole, chunks


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=60).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_any_chunking_gives_the_same_frames(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]

    async def main() -> tuple[bytes, bytes]:
        with trio.fail_after(10):
            return await exchange(lines_task, [data]), await exchange(lines_task, chunks)

    whole, split = trio.run(main)
    assert whole == split


async def test_open_peer_with_a_framed_task() -> None:
    with trio.fail_after(5):
        async with open_peer(lines_task) as peer:
            await peer.send_all(b"hello\r\n")
            assert await peer.receive_until(b"\n") == b"5 b'\\r\\n'"

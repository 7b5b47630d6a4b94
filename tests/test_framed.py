"""Tests of FramedStream: trio's stream conformance suite, framing, errors, checkpoints,
cancellation and chunking independence."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeAlias

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from line_totals import sum_values

from trio_chat import (
    DEFAULT_MAX_FRAME_SIZE,
    Delimiter,
    FramedStream,
    FrameTooLongError,
    HalfCloseableFramedStream,
    IncompleteFrameError,
)
from trio_chat._framed import _FRAMES_PER_CHECKPOINT
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


class PlainStream(trio.abc.Stream):
    """A stream that cannot half-close: hides the wrapped stream's send_eof."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_conformance_two_way_stream_over_a_plain_stream() -> None:
    def plain(left: trio.abc.Stream, right: trio.abc.Stream) -> tuple[FramedStream, FramedStream]:
        pair = FramedStream(PlainStream(left)), FramedStream(PlainStream(right))
        assert all(type(framed) is FramedStream for framed in pair)  # the plain class
        return pair

    async def plain_pair() -> tuple[FramedStream, FramedStream]:
        return plain(*trio.testing.memory_stream_pair())

    async def clogged_plain_pair() -> tuple[FramedStream, FramedStream]:
        return plain(*trio.testing.lockstep_stream_pair())

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(plain_pair, clogged_plain_pair)


def test_the_default_max_bytes_is_finite() -> None:
    framed = FramedStream(trio.testing.memory_stream_pair()[0])
    assert framed.max_bytes == DEFAULT_MAX_FRAME_SIZE == 65536


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
        FramedStream(b"")  # type: ignore[call-overload]


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


async def test_every_receive_method_is_a_cancel_point_even_when_data_is_buffered() -> None:
    # trio's streams checkpoint per read; served from the buffer, a call is a cancel point
    # (and a schedule point once per _FRAMES_PER_CHECKPOINT calls), and a cancelled call takes
    # nothing.
    with trio.fail_after(5):
        _, framed = await feeding(b"a\nbcdefgh\nrest")
        await framed.receive_some(1)  # the buffer now holds the rest
        calls: list[tuple[Callable[[], Awaitable[bytes]], bytes]] = [
            (lambda: framed.receive_until(b"\n"), b""),
            (lambda: framed.receive_exactly(2), b"bc"),
            (lambda: framed.receive_until(re.compile(rb"\n")), b"defgh"),
            (lambda: framed.receive_some(1), b"r"),
        ]
        for call, expected in calls:
            with trio.CancelScope() as scope:
                scope.cancel()
                await call()
                pytest.fail("a cancelled receive call returned")
            assert await call() == expected  # the cancelled call took nothing
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


# ------------------------------------------------- receive_frames and a fast frames()


class ChunkStream(trio.abc.Stream):
    """Serves *chunks* exactly as given, one per ``receive_some`` (each after a checkpoint),
    then EOF: the chunking a test chooses is the chunking the FramedStream sees."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = [chunk for chunk in chunks if chunk][::-1]
        self.reads = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._chunks:
            return b""
        self.reads += 1
        chunk = self._chunks.pop()
        if max_bytes is not None and len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._chunks.append(rest)
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def chunked(chunks: list[bytes], max_bytes: int | None = 65536) -> FramedStream:
    return FramedStream(ChunkStream(chunks), max_bytes=max_bytes)


#: (frames with the delimiter that ended each, how it ended): "end", ("incomplete", partial)
#: or ("too long", every byte still readable after the error).
Transcript: TypeAlias = "tuple[list[tuple[bytes, bytes | None]], object]"


async def rest_of(framed: FramedStream) -> bytes:
    out = b""
    while data := await framed.receive_some():
        out += data
    return out


async def one_by_one(framed: FramedStream, delimiter: Delimiter) -> Transcript:
    """The reference: receive_until, one frame per call."""
    frames: list[tuple[bytes, bytes | None]] = []
    try:
        while True:
            frame = await framed.receive_until(delimiter)
            frames.append((frame, framed.last_delimiter))
    except trio.EndOfChannel:
        return frames, "end"
    except IncompleteFrameError as exc:
        return frames, ("incomplete", exc.partial)
    except FrameTooLongError:
        return frames, ("too long", await rest_of(framed))


async def in_batches(
    framed: FramedStream, delimiter: Delimiter, max_frames: int | None
) -> Transcript:
    """receive_frames until it raises; only a batch's last frame has a known delimiter."""
    frames: list[tuple[bytes, bytes | None]] = []
    try:
        while True:
            batch = await framed.receive_frames(delimiter, max_frames=max_frames)
            assert 1 <= len(batch) <= (max_frames or len(batch))
            frames += [(frame, None) for frame in batch[:-1]]
            frames.append((batch[-1], framed.last_delimiter))
    except trio.EndOfChannel:
        return frames, "end"
    except IncompleteFrameError as exc:
        return frames, ("incomplete", exc.partial)
    except FrameTooLongError:
        return frames, ("too long", await rest_of(framed))


async def iterated(framed: FramedStream, delimiter: Delimiter, breaks: list[int]) -> Transcript:
    """``async for`` over frames(), leaving the loop after breaks[0] frames, then a new loop
    for breaks[1] frames, ... (the last loop runs to the end)."""
    frames: list[tuple[bytes, bytes | None]] = []
    loops = iter(breaks)
    try:
        while True:
            stop = next(loops, -1)
            taken = 0
            async for frame in framed.frames(delimiter):
                frames.append((frame, framed.last_delimiter))
                taken += 1
                if taken == stop:
                    break
            else:
                return frames, "end"
    except IncompleteFrameError as exc:
        return frames, ("incomplete", exc.partial)
    except FrameTooLongError:
        return frames, ("too long", await rest_of(framed))


def same_frames(reference: Transcript, other: Transcript) -> None:
    """Equal, except that a frame whose delimiter *other* does not know may have any."""
    assert [f for f, _ in other[0]] == [f for f, _ in reference[0]]
    for (_, expected), (_, seen) in zip(reference[0], other[0], strict=True):
        assert seen is None or seen == expected
    assert other[1] == reference[1]


DELIMITERS: list[Delimiter] = [
    b"\n",
    b"\r\n",
    b"ab",
    (b"\r\n", b"\n"),
    re.compile(rb"\r?\n"),
    re.compile(rb"b+\n"),
]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=80).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
    delimiter=st.sampled_from(DELIMITERS),
    max_bytes=st.sampled_from([None, 0, 1, 3, 8]),
    max_frames=st.sampled_from([None, 1, 2, 5]),
    breaks=st.lists(st.integers(min_value=1, max_value=6), max_size=6),
)
def test_receive_frames_and_frames_give_the_frames_of_receive_until_for_any_chunking(
    data: bytes,
    cuts: list[int],
    delimiter: Delimiter,
    max_bytes: int | None,
    max_frames: int | None,
    breaks: list[int],
) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]

    async def main() -> None:
        with trio.fail_after(10):
            reference = await one_by_one(chunked([data], max_bytes), delimiter)
            same_frames(reference, await one_by_one(chunked(chunks, max_bytes), delimiter))
            batches = await in_batches(chunked(chunks, max_bytes), delimiter, max_frames)
            same_frames(reference, batches)
            same_frames(reference, await iterated(chunked(chunks, max_bytes), delimiter, breaks))

    trio.run(main)


async def test_receive_frames_returns_every_complete_buffered_frame_in_one_call() -> None:
    with trio.fail_after(5):
        source = ChunkStream([b"a\nbb\n\nccc\ndd", b"d\ne\n"])
        framed = FramedStream(source)
        assert await framed.receive_frames(b"\n") == [b"a", b"bb", b"", b"ccc"]
        assert (source.reads, framed.buffered) == (1, 2)  # b"dd" waits for its delimiter
        assert await framed.receive_frames(b"\n") == [b"ddd", b"e"]
        assert framed.last_delimiter == b"\n"
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_frames(b"\n")


async def test_receive_frames_with_a_tuple_and_a_regex_tells_the_last_delimiter() -> None:
    with trio.fail_after(5):
        framed = chunked([b"a\r\nb\nc\r\nd"])
        assert await framed.receive_frames((b"\r\n", b"\n")) == [b"a", b"b", b"c"]
        assert framed.last_delimiter == b"\r\n"
        framed = chunked([b"a\r\nb\nc;;;d\n"])
        assert await framed.receive_frames(re.compile(rb"\r?\n|;+")) == [b"a", b"b", b"c", b"d"]
        assert framed.last_delimiter == b"\n"
        framed = chunked([b"a\r\nb;;"])
        assert await framed.receive_frames(re.compile(rb"\r?\n|;+")) == [b"a"]
        assert framed.last_delimiter == b"\r\n"  # b";;" may still grow: not a frame yet


async def test_receive_frames_at_the_end_of_the_input() -> None:
    with trio.fail_after(5):
        framed = chunked([b"a\nb\n"])
        assert await framed.receive_frames(b"\n") == [b"a", b"b"]
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_frames(b"\n")
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_frames(b"\n")

        framed = chunked([b"a\nb\nc"])
        assert await framed.receive_frames(b"\n") == [b"a", b"b"]  # the complete frames first
        with pytest.raises(IncompleteFrameError, match="after 1 bytes") as info:
            await framed.receive_frames(b"\n")
        assert (info.value.partial, info.value.terminator) == (b"c", b"\n")
        with pytest.raises(trio.EndOfChannel):
            await framed.receive_frames(b"\n")

        framed = chunked([b"a\r\nb", b"c\r"])  # the held-back b"\r" belongs to the partial frame
        assert await framed.receive_frames(b"\r\n") == [b"a"]
        with pytest.raises(IncompleteFrameError) as info:
            await framed.receive_frames(b"\r\n")
        assert info.value.partial == b"bc\r"

        with pytest.raises(trio.EndOfChannel):
            await chunked([]).receive_frames(b"\n")


async def test_receive_frames_returns_the_frames_before_a_too_long_one_first() -> None:
    with trio.fail_after(5):
        framed = chunked([b"ab\ncd\nefghij", b"kl\nmn\n"], max_bytes=5)
        assert await framed.receive_frames(b"\n") == [b"ab", b"cd"]
        with pytest.raises(FrameTooLongError, match="more than 5 bytes") as info:
            await framed.receive_frames(b"\n")
        assert (info.value.limit, info.value.terminator) == (5, b"\n")
        with pytest.raises(FrameTooLongError):  # again: nothing was consumed
            await framed.receive_frames(b"\n")
        assert framed.buffered == len(b"efghij")  # every byte received stays readable
        assert await framed.receive_frames(b"\n", max_bytes=8) == [b"efghijkl", b"mn"]

        # Over the limit inside one read, with frames before and after it.
        framed = chunked([b"a\nbcdefgh\ni\n"], max_bytes=3)
        assert await framed.receive_frames(b"\n") == [b"a"]
        with pytest.raises(FrameTooLongError):
            await framed.receive_frames(b"\n")
        assert await rest_of(framed) == b"bcdefgh\ni\n"


async def test_receive_frames_max_bytes_is_per_frame() -> None:
    with trio.fail_after(5):
        framed = chunked([b"12345\n123456\n"], max_bytes=None)
        assert await framed.receive_frames(b"\n", max_bytes=6) == [b"12345", b"123456"]
        framed = chunked([b"12345\n123456\n"], max_bytes=6)
        assert await framed.receive_frames(b"\n", max_bytes=5) == [b"12345"]
        with pytest.raises(FrameTooLongError):
            await framed.receive_frames(b"\n", max_bytes=5)
        assert await framed.receive_frames(b"\n") == [b"123456"]  # the stream's max_bytes
        framed = chunked([b"\n\n1\n"])
        assert await framed.receive_frames(b"\n", max_bytes=0) == [b"", b""]
        with pytest.raises(ValueError, match="max_bytes must be >= 0"):
            await framed.receive_frames(b"\n", max_bytes=-1)


async def test_receive_frames_max_frames_leaves_the_rest_buffered() -> None:
    with trio.fail_after(5):
        source = ChunkStream([b"a\nb\nc\nd\ne"])
        framed = FramedStream(source)
        assert await framed.receive_frames(b"\n", max_frames=2) == [b"a", b"b"]
        assert framed.buffered == 5
        assert await framed.receive_frames(b"\n", max_frames=1) == [b"c"]
        assert await framed.receive_until(b"\n") == b"d"  # the same buffer for every method
        assert await framed.receive_some() == b"e"
        assert source.reads == 1
        for bad, error in [(0, ValueError), (-1, ValueError), (1.5, TypeError)]:
            with pytest.raises(error, match=r"max_frames must be >= 1|integer"):
                await framed.receive_frames(b"\n", max_frames=bad)  # type: ignore[arg-type]


async def test_receive_frames_bad_delimiters_name_the_method() -> None:
    with trio.fail_after(5):
        framed = chunked([b"x\n"])
        with pytest.raises(TypeError, match=r"receive_frames\(\) takes bytes.*not 'int'"):
            await framed.receive_frames(4)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"receive_frames\(\) needs a non-empty delimiter"):
            await framed.receive_frames(b"")
        with pytest.raises(TypeError, match=r"encode it: b'\\n'"):
            await framed.receive_frames("\n")  # type: ignore[arg-type]
        assert await framed.receive_frames(b"\n") == [b"x"]  # nothing was lost


async def test_receive_frames_after_other_requests_and_before_them() -> None:
    with trio.fail_after(5):
        framed = chunked([b"3\nabc", b"x;y;z\r\nq\n"])
        assert await framed.receive_until(b"\n") == b"3"
        assert await framed.receive_exactly(3) == b"abc"
        assert await framed.receive_frames(b";", max_frames=1) == [b"x"]
        assert await framed.receive_frames(b"\r\n") == [b"y;z"]
        assert await framed.receive_frames((b"\r\n", b"\n")) == [b"q"]
        assert framed.last_delimiter == b"\n"


class StepCounter(trio.abc.Instrument):
    """Counts the scheduler passes (task steps) of one task: one per schedule point."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


@contextlib.contextmanager
def counting_steps() -> Iterator[StepCounter]:
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_receive_frames_has_one_schedule_point_for_all_buffered_frames() -> None:
    with trio.fail_after(5):
        data = b"".join(b"line %d\n" % i for i in range(500))
        source = ChunkStream([data + b"partial"])
        framed = FramedStream(source)
        assert await framed.receive_until(b"\n") == b"line 0"  # everything is buffered now
        with counting_steps() as counter:
            frames = await framed.receive_frames(b"\n")
        assert len(frames) == 499
        assert counter.steps <= 1  # not one per frame
        with counting_steps() as counter, pytest.raises(IncompleteFrameError):
            await framed.receive_frames(b"\n")  # it has to read (EOF): the read checkpoints
        assert counter.steps == 1
        assert source.reads == 1


async def test_frames_has_a_schedule_point_per_read_and_per_64_buffered_frames() -> None:
    n = _FRAMES_PER_CHECKPOINT  # 64
    with trio.fail_after(5):
        data = b"".join(b"%d\n" % i for i in range(3 * n + 8))
        framed = chunked([data])
        frames = framed.frames(b"\n")
        with counting_steps() as counter:
            assert await frames.__anext__() == b"0"  # reads
        assert counter.steps == 1
        with counting_steps() as counter:
            for i in range(1, n):
                assert await frames.__anext__() == b"%d" % i
        assert counter.steps == 0  # served from the buffer
        with counting_steps() as counter:
            assert await frames.__anext__() == b"%d" % n
        assert counter.steps == 1  # the 64th in a row

        framed = chunked([data])
        with counting_steps() as counter:
            assert len([frame async for frame in framed.frames(b"\n")]) == 3 * n + 8
        # The read, one schedule point after each n frames served from the buffer, the EOF read.
        assert counter.steps == 1 + 3 + 1


async def test_frames_lets_other_tasks_run_and_can_be_cancelled_in_a_fast_loop() -> None:
    with trio.fail_after(5):
        framed = chunked([b"x\n" * 1000])
        seen = 0
        with trio.CancelScope() as scope:
            async for _ in framed.frames(b"\n"):
                seen += 1
                if seen == 10:
                    scope.cancel()
        assert seen == 10  # every step is a cancel point
        assert await framed.receive_frames(b"\n") == [b"x"] * (1000 - seen)  # none lost

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        framed = chunked([b"x\n" * 1000])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            async for _ in framed.frames(b"\n"):
                pass
            nursery.cancel_scope.cancel()
        assert ticks >= 1000 // 65  # the other task ran while the loop went on


async def test_leaving_a_frames_loop_early_loses_nothing() -> None:
    with trio.fail_after(5):
        data = b"".join(b"%d\n" % i for i in range(100)) + b"tail"
        for stop in [1, 2, 63, 64, 65, 99]:
            framed = chunked([data])
            seen = []
            async for frame in framed.frames(b"\n"):
                seen.append(frame)
                if len(seen) == stop:
                    break
            rest = await framed.receive_frames(b"\n")
            assert seen + rest == [b"%d" % i for i in range(100)]
            with pytest.raises(IncompleteFrameError) as info:
                await framed.receive_frames(b"\n")
            assert info.value.partial == b"tail"


async def test_frames_follows_other_requests_made_in_its_loop() -> None:
    with trio.fail_after(5):
        framed = chunked([b"3\nabc2\nxyA\nB\nC\nD\nx;y;\nz\n"])
        seen = []
        async for header in framed.frames(b"\n"):
            if header.isdigit():
                seen.append(await framed.receive_exactly(int(header)))
            else:
                seen.append(header)
                if header == b"A":
                    seen.append(await framed.receive_until(b"\n"))  # the same request
                if header == b"D":
                    seen.append(await framed.receive_until(b";"))  # another delimiter
        assert seen == [b"abc", b"xy", b"A", b"B", b"C", b"D", b"x", b"y;", b"z"]


async def test_receive_frames_and_frames_refuse_a_second_receiver() -> None:
    with trio.fail_after(5):
        _left, right = trio.testing.memory_stream_pair()
        framed = FramedStream(right)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(framed.receive_until, b"\n")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError, match="already receiving"):
                await framed.receive_frames(b"\n")
            with pytest.raises(trio.BusyResourceError, match="already receiving"):
                async for _ in framed.frames(b"\n"):
                    pass
            nursery.cancel_scope.cancel()


async def test_receive_frames_on_a_closed_stream() -> None:
    with trio.fail_after(5):
        framed = chunked([b"a\nb\n"])
        assert await framed.receive_frames(b"\n", max_frames=1) == [b"a"]
        await framed.aclose()
        with pytest.raises(trio.ClosedResourceError, match="FramedStream was closed"):
            await framed.receive_frames(b"\n")
        with pytest.raises(trio.ClosedResourceError, match="FramedStream was closed"):
            async for _ in framed.frames(b"\n"):
                pass


async def test_receive_frames_cancelled_before_it_starts_takes_nothing() -> None:
    with trio.fail_after(5):
        framed = chunked([b"a\nb\nc\nd"])
        assert await framed.receive_until(b"\n") == b"a"  # the rest is buffered
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await framed.receive_frames(b"\n")
        assert await framed.receive_frames(b"\n") == [b"b", b"c"]


async def test_cancelling_receive_frames_anywhere_loses_nothing() -> None:
    lines = [b"line %d" % i for i in range(300)]
    data = b"\n".join(lines) + b"\n"
    # Frames cross reads, and each read holds more than max_frames: the cancellation lands
    # while a call waits for a read, at its first cancel point, or at its last schedule point.
    chunks = [data[i : i + 197] for i in range(0, len(data), 197)]
    cancels = 0
    with trio.fail_after(20):
        for delay in range(6):
            framed = chunked(chunks)
            got: list[bytes] = []
            while True:
                async with trio.open_nursery() as nursery:

                    async def cancel_after(scope: trio.CancelScope, steps: int) -> None:
                        for _ in range(steps):
                            await trio.lowlevel.checkpoint()
                        scope.cancel()

                    with trio.CancelScope() as scope:
                        nursery.start_soon(cancel_after, scope, delay)
                        try:
                            got += await framed.receive_frames(b"\n", max_frames=7)
                        except trio.EndOfChannel:
                            break
                    cancels += scope.cancelled_caught
                    nursery.cancel_scope.cancel()
            assert got == lines
    assert cancels > 0  # some calls were cancelled (the others too late to raise, or never)


async def test_the_line_totals_example() -> None:
    data = b"a 1\nb 2\na 3\nc -4\n"
    with trio.fail_after(10):
        assert await exchange(sum_values, data) == b"a 4\nb 2\nc -4\n"
        for chunks in every_split(data):
            assert await exchange(sum_values, chunks) == b"a 4\nb 2\nc -4\n"
        assert await exchange(sum_values, b"") == b""
        with pytest.raises(IncompleteFrameError, match="after 3 bytes"):
            async with open_peer(sum_values) as peer:
                await peer.send_all(b"a 1\na 2")  # the input ends inside a line
                await peer.send_eof()
                assert await peer.receive_some() == b""  # no totals


async def test_frame_timeout_bounds_a_trickled_frame_not_the_pause_between_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    framed.frame_timeout = 5.0

    async def trickle(data: bytes, every: float) -> None:
        for byte in data:
            await client.send_all(bytes([byte]))
            await trio.sleep(every)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            # Whole frames with long pauses between them: the clock only runs inside a frame.
            await client.send_all(b"one\n")
            assert await framed.receive_until(b"\n") == b"one"
            await trio.sleep(30)
            nursery.start_soon(trickle, b"two\n", 1.0)  # 4 s for the frame: in time
            assert await framed.receive_until(b"\n") == b"two"
            await trio.sleep(30)
            nursery.start_soon(trickle, b"x" * 20, 1.0)  # one byte a second, no end
            started = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await framed.receive_until(b"\n")
            assert trio.current_time() - started <= 5.0
            nursery.cancel_scope.cancel()
    # Every byte that arrived stays readable.
    assert (await framed.receive_some()).startswith(b"xxxx")


async def test_frame_timeout_counts_from_bytes_left_over_from_an_earlier_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    framed.frame_timeout = 5.0
    with trio.fail_after(60):
        await client.send_all(b"one\ntw")  # the next frame starts in the same read
        assert await framed.receive_until(b"\n") == b"one"
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await framed.receive_until(b"\n")
        assert trio.current_time() - started == pytest.approx(5.0)

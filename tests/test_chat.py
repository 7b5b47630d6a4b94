"""AsyncChat over trio.testing memory streams: every point of the handler contract."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from email.parser import BytesHeaderParser
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from stream_helpers import read_all

import trio_chat
from trio_chat import AsyncChat, FrameTooLongError, simple_producer


class Lines(AsyncChat):
    """Collects frames; replies to each with ``reply(frame)`` if set."""

    def __init__(self, stream: trio.abc.Stream | None = None, term: Any = b"\n") -> None:
        super().__init__(stream)
        self.set_terminator(term)
        self.pieces: list[bytes] = []
        self.all_pieces: list[bytes] = []
        self.frames: list[bytes] = []
        self.closed_by_peer = False

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)
        self.all_pieces.append(data)

    def found_terminator(self) -> None:
        frame = b"".join(self.pieces)
        self.pieces.clear()
        self.frames.append(frame)
        self.on_frame(frame)

    def on_frame(self, frame: bytes) -> None:
        self.push(frame.upper() + b"\n")

    def handle_close(self) -> None:
        self.closed_by_peer = True
        super().handle_close()


async def test_echo_over_memory_streams() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            for piece in [b"hel", b"lo\nwo", b"rld\n\n", b"x"]:
                await client.send_all(piece)
            await client.send_eof()
            assert await read_all(client) == b"HELLO\nWORLD\n\nX\n"[:-2]
    assert chat.frames == [b"hello", b"world", b""]
    assert chat.pieces == [b"x"]  # handed over at EOF, no terminator followed
    assert chat.closed_by_peer
    assert chat.closed


async def test_half_closed_peer_still_gets_the_reply() -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Lines(server).run)
            await client.send_all(b"request\n")
            await client.send_eof()
            assert await read_all(client) == b"REQUEST\n"


async def test_collected_data_is_never_empty() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server, b"\r\n")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            for byte in b"\r\n\r\nab\r\r\n\r":
                await client.send_all(bytes([byte]))
            await client.send_eof()
            await read_all(client)
    assert all(chat.all_pieces)
    assert chat.frames == [b"", b"", b"ab\r"]
    assert chat.pieces == [b"\r"]


async def test_async_found_terminator_is_awaited_before_more_input() -> None:
    events: list[str] = []

    class Slow(Lines):
        async def found_terminator(self) -> None:  # type: ignore[override]
            frame = b"".join(self.pieces)
            self.pieces.clear()
            events.append(f"start {frame.decode()}")
            await trio.sleep(0.01)
            events.append(f"end {frame.decode()}")

        def collect_incoming_data(self, data: bytes) -> None:
            events.append(f"data {data.decode()}")
            super().collect_incoming_data(data)

    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Slow(server).run)
            await client.send_all(b"a\nb\n")
            await client.send_eof()
            await read_all(client)
    assert events == ["data a", "start a", "end a", "data b", "start b", "end b"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handle_connect_runs_before_input_and_its_push_goes_first(kind: str) -> None:
    seen_frames_at_connect: list[int] = []

    class Greeter(Lines):
        def handle_connect(self) -> Awaitable[None] | None:
            if kind == "sync":
                self.greet()
                return None
            return self.greet_later()

        def greet(self) -> None:
            seen_frames_at_connect.append(len(self.frames))
            self.push(b"220 hello\n")

        async def greet_later(self) -> None:
            await trio.sleep(0.01)
            self.greet()

    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await client.send_all(b"early\n")  # already waiting when run() starts
            nursery.start_soon(Greeter(server).run)
            await client.send_eof()
            assert await read_all(client) == b"220 hello\nEARLY\n"
    assert seen_frames_at_connect == [0]


async def test_pushes_before_run_are_sent_first_and_order_is_kept() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    chat.push(b"one ")
    chat.push_with_producer(simple_producer(b"two ", buffer_size=1))
    chat.push(bytearray(b"three "))
    chat.push_with_producer(iter([b"fo", b"ur "]))
    chat.push(memoryview(b"five\n"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"six\n")
            await client.send_eof()
            assert await read_all(client) == b"one two three four five\nSIX\n"


async def test_push_sends_the_bytes_as_they_were_at_the_call() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    data = bytearray(b"before\n")
    chat.push(data)
    data[:] = b"AFTER!\n"
    view_source = bytearray(b"view\n")
    chat.push(memoryview(view_source))
    view_source[:] = b"XXXX\n"
    chat.close_when_done()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            assert await read_all(client) == b"before\nview\n"


def test_push_type_checks() -> None:
    chat = Lines()
    with pytest.raises(TypeError, match=r"not 'str' \(encode it first"):
        chat.push("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'int'"):
        chat.push(10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'str'"):
        chat.push_with_producer("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'int'"):
        chat.push_with_producer(10)  # type: ignore[arg-type]
    chat.push(b"")  # empty pushes are fine and send nothing
    assert chat.queued_bytes == 0


def test_set_terminator_rules() -> None:
    chat = Lines()
    with pytest.raises(TypeError, match=r"not 'str' \(encode it: b'\\n'\)"):
        chat.set_terminator("\n")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        chat.set_terminator(-5)
    for term in (b"", 0, None, b"\r\n", 7):
        chat.set_terminator(term)
        assert chat.get_terminator() == term


async def test_numeric_terminator_reports_zero_when_satisfied() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server, 3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"ab")
            await trio.testing.wait_all_tasks_blocked()
            assert chat.get_terminator() == 1
            await client.send_all(b"cdef")
            await client.send_eof()
            await read_all(client)
    assert chat.frames == [b"abc"]
    assert chat.get_terminator() == 0
    assert chat.pieces == [b"def"]  # 0 acts as None


async def test_http_request_reader_from_the_asynchat_docs() -> None:
    """The example at the end of the asynchat documentation, on trio_chat."""

    class HttpRequestHandler(AsyncChat):
        def __init__(self, stream: trio.abc.Stream) -> None:
            super().__init__(stream)
            self.ibuffer: list[bytes] = []
            self.set_terminator(b"\r\n\r\n")
            self.reading_headers = True
            self.handling = False
            self.cgi_data: bytes | None = None
            self.op = b""
            self.headers: dict[str, str] = {}

        def collect_incoming_data(self, data: bytes) -> None:
            self.ibuffer.append(data)

        def parse_headers(self, data: bytes) -> None:
            request_line, _, rest = data.partition(b"\r\n")
            self.op = request_line.split()[0]
            self.headers = dict(BytesHeaderParser().parsebytes(rest).items())

        def found_terminator(self) -> None:
            if self.reading_headers:
                self.reading_headers = False
                self.parse_headers(b"".join(self.ibuffer))
                self.ibuffer = []
                if self.op.upper() == b"POST":
                    self.set_terminator(int(self.headers["Content-Length"]))
                else:
                    self.handling = True
                    self.set_terminator(None)
                    self.handle_request()
            elif not self.handling:
                self.set_terminator(None)  # browsers sometimes over-send
                self.cgi_data = b"".join(self.ibuffer)
                self.handling = True
                self.ibuffer = []
                self.handle_request()

        def handle_request(self) -> None:
            body = b"%s %d\n" % (self.op, len(self.cgi_data or b""))
            self.push(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.close_when_done()

    request = b"POST /form HTTP/1.0\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello=worldEXTRA-BYTES"
    for cut in range(0, len(request) + 1, 7):
        client, server = trio.testing.memory_stream_pair()
        handler = HttpRequestHandler(server)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handler.run)
                await client.send_all(request[:cut])
                await client.send_all(request[cut:])
                reply = await read_all(client)
        assert reply == b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nPOST 11\n", cut
        assert handler.cgi_data == b"hello=world"
        assert handler.headers["Host"] == "x"
        assert handler.get_terminator() is None


async def test_close_when_done_flushes_then_closes_and_stops_reading() -> None:
    class Quitter(Lines):
        def on_frame(self, frame: bytes) -> None:
            if frame == b"QUIT":
                self.push(b"bye\n")
                self.close_when_done()
            else:
                super().on_frame(frame)

    client, server = trio.testing.memory_stream_pair()
    chat = Quitter(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"a\nQUIT\nafter\n")
            assert await read_all(client) == b"A\nbye\n"
    assert chat.frames == [b"a", b"QUIT"]  # input after close_when_done is not processed
    with pytest.raises(trio.ClosedResourceError):
        chat.push(b"late")


async def test_close_drops_queued_output() -> None:
    client, server = trio.testing.lockstep_stream_pair()
    chat = Lines(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            chat.push(b"x" * 1000)
            await trio.testing.wait_all_tasks_blocked()  # in flight: the peer doesn't read
            chat.push(b"never sent")
            chat.close()
            received = await read_all(client)
    assert b"never sent" not in received
    assert chat.queued_bytes == 0
    with pytest.raises(trio.ClosedResourceError, match="closed or closing"):
        chat.push(b"x")


async def test_close_before_run_closes_the_stream() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    chat.push(b"dropped")
    chat.close()
    with trio.fail_after(5):
        await chat.run()
        assert await read_all(client) == b""


async def test_discard_buffers_drops_output_and_unprocessed_input() -> None:
    class Discarder(Lines):
        def on_frame(self, frame: bytes) -> None:
            if frame == b"RESET":
                self.discard_buffers()
                self.push(b"reset\n")
            else:
                self.push(frame + b"\n")

    client, server = trio.testing.lockstep_stream_pair()
    chat = Discarder(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            # One read: "b" is queued, then RESET drops it and the unprocessed "c" and "d".
            await client.send_all(b"a\n")
            assert await client.receive_some() == b"a\n"
            nursery.start_soon(client.send_all, b"b\nRESET\nc\nd\n")
            assert await client.receive_some() == b"reset\n"
            # The background send_all returns once its bytes were received: let it finish.
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"e\n")
            assert await client.receive_some() == b"e\n"
            chat.close()
    assert chat.frames == [b"a", b"b", b"RESET", b"e"]


async def test_hook_exception_propagates_unwrapped_after_the_stream_closed() -> None:
    class Broken(Lines):
        def on_frame(self, frame: bytes) -> None:
            raise KeyError(frame)

    client, server = trio.testing.memory_stream_pair()
    chat = Broken(server)
    await client.send_all(b"boom\n")
    with trio.fail_after(5), pytest.raises(KeyError, match="boom"):
        await chat.run()
    assert await read_all(client) == b""  # the stream was closed: the peer sees EOF
    assert chat.closed


async def test_frame_too_long_closes_and_propagates() -> None:
    class Small(Lines):
        max_frame_size = 8

    client, server = trio.testing.memory_stream_pair()
    chat = Small(server)
    await client.send_all(b"12345678\n123456789")
    with trio.fail_after(5), pytest.raises(FrameTooLongError) as info:
        await chat.run()
    assert info.value.limit == 8
    assert chat.frames == [b"12345678"]


async def test_not_implemented_hooks_say_what_to_do() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"data")
    with trio.fail_after(5), pytest.raises(NotImplementedError, match="collect_incoming_data"):
        await AsyncChat(server).run()


async def test_run_argument_errors() -> None:
    with pytest.raises(TypeError, match="no stream to run on"):
        await AsyncChat().run()
    client, server = trio.testing.memory_stream_pair()
    chat = Lines()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run, server)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await chat.run()
            with pytest.raises(ValueError, match="different stream"):
                await chat.run(client)
            await client.send_eof()
    with pytest.raises(trio.ClosedResourceError, match="already ran"):
        await chat.run()


async def test_cancelling_run_closes_the_stream_promptly() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    with trio.fail_after(5):
        with trio.move_on_after(0.05):
            await chat.run()
        assert chat.closed
        assert await read_all(client) == b""
        with pytest.raises(trio.ClosedResourceError):
            chat.push(b"x")


async def test_peer_reset_is_a_close_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    class ResetReceiveStream(trio.abc.ReceiveStream):
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("connection reset")

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    chat = Lines(trio.StapledStream(trio.testing.MemorySendStream(), ResetReceiveStream()))
    caplog.set_level(logging.DEBUG, logger="trio_chat")
    with trio.fail_after(5):
        await chat.run()
    assert chat.closed_by_peer
    assert "reset" in caplog.text


async def test_iterable_and_async_iterable_producers() -> None:
    closed: list[bool] = []

    async def agen() -> AsyncIterator[bytes]:
        try:
            for word in (b"async ", b"gen "):
                await trio.lowlevel.checkpoint()
                yield word
        finally:
            closed.append(True)

    def gen() -> Iterator[bytes | bytearray]:
        yield b"sync "
        yield bytearray(b"gen ")

    client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    chat.push_with_producer(gen())
    chat.push_with_producer(agen())
    chat.push_with_producer([b"list", memoryview(b"!")])
    chat.push_with_producer(b" bytes")
    chat.close_when_done()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            assert await read_all(client) == b"sync gen async gen list! bytes"
    assert closed == [True]


async def test_a_producer_yielding_str_is_an_error() -> None:
    _client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    chat.push_with_producer(iter(["text"]))  # type: ignore[arg-type]
    with trio.fail_after(5), pytest.raises(TypeError, match=r"producer .* not 'str'"):
        await chat.run()


async def test_backpressure_bounds_queued_output() -> None:
    """A peer that sends without reading cannot grow the handler's output queue."""
    client, server = trio.testing.lockstep_stream_pair()

    class Amplifier(Lines):
        out_high_water = 10_000

        def on_frame(self, frame: bytes) -> None:
            self.push(frame * 100 + b"\n")  # 1,000-byte replies to 10-byte requests

    chat = Amplifier(server)
    requests = [b"%09d\n" % i for i in range(2000)]
    peak = 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            sent = 0

            async def sender() -> None:
                nonlocal sent
                for request in requests:
                    await client.send_all(request)
                    sent += 1

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            peak = chat.queued_bytes
            # The handler stopped reading: the sender is stuck far from the end.
            assert sent < 100
            # Now read everything: every reply arrives, in order.
            expected = b"".join(r[:-1] * 100 + b"\n" for r in requests)
            got = bytearray()
            while len(got) < len(expected):
                got += await client.receive_some()
                peak = max(peak, chat.queued_bytes)
            assert got == expected
            # The last send_all returns once its bytes were received: let it finish first.
            await trio.testing.wait_all_tasks_blocked()
            assert sent == len(requests)
            await client.send_eof()
    # One read's replies may land on top of the high-water mark, never more.
    assert peak <= Amplifier.out_high_water + 1001


async def test_many_frames_in_one_read_let_other_tasks_run() -> None:
    ticks = 0
    seen: list[int] = []

    class Recorder(Lines):
        def on_frame(self, frame: bytes) -> None:
            seen.append(ticks)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    client, server = trio.testing.memory_stream_pair()
    chat = Recorder(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await client.send_all(b"x\n" * 5000)  # one read holding 5,000 frames
            await client.send_eof()
            await chat.run()
            nursery.cancel_scope.cancel()
    assert len(seen) == 5000
    # The ticker ran while the frames of that one read were dispatched.
    assert seen[-1] - seen[0] >= 5000 // 256 - 2


async def test_run_checkpoints() -> None:
    _client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    chat.close()
    with trio.testing.assert_checkpoints():
        await chat.run()


def test_async_chat_alias_and_public_surface() -> None:
    assert issubclass(trio_chat.async_chat, AsyncChat)
    assert AsyncChat.__module__ == "trio_chat"
    assert AsyncChat.ac_in_buffer_size == 65536
    assert AsyncChat.ac_out_buffer_size == 65536
    assert AsyncChat.max_frame_size == trio_chat.DEFAULT_MAX_FRAME_SIZE
    for name in trio_chat.__all__:
        assert hasattr(trio_chat, name), name


async def test_last_terminator_tells_which_tuple_member_matched() -> None:
    matched: list[bytes | int | None] = []

    class Either(Lines):
        def on_frame(self, frame: bytes) -> None:
            matched.append(self.last_terminator)

    client, server = trio.testing.memory_stream_pair()
    chat = Either(server, (b"\r\n", b"\n"))
    assert chat.last_terminator is None
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"dos\r\nunix\nold\r")
            await client.send_all(b"\n")
            await client.send_eof()
            await read_all(client)
    assert chat.frames == [b"dos", b"unix", b"old"]
    assert matched == [b"\r\n", b"\n", b"\r\n"]


async def test_stream_closed_under_the_handler_ends_run() -> None:
    _client, server = trio.testing.memory_stream_pair()
    chat = Lines(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()  # not through the handler
    assert chat.closed


class CollectOnly(AsyncChat):
    """Implements collect_incoming_data only: found_terminator is the default."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.collected: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.collected.append(data)


async def test_the_default_found_terminator_raises_not_implemented() -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = CollectOnly(server)
    await client.send_all(b"line\nmore\n")
    with (
        trio.fail_after(5),
        pytest.raises(
            NotImplementedError, match=r"^subclasses of AsyncChat must implement found_terminator$"
        ),
    ):
        await chat.run()
    assert chat.collected == [b"line"]  # the frame's data came first; nothing after the error
    assert chat.closed
    assert await client.receive_some() == b""  # run() closed the stream on its way out


async def test_the_default_collect_incoming_data_raises_not_implemented() -> None:
    class FoundOnly(AsyncChat):
        def found_terminator(self) -> None:
            pass

    client, server = trio.testing.memory_stream_pair()
    chat = FoundOnly(server)
    chat.set_terminator(b"\n")
    await client.send_all(b"line\n")
    with (
        trio.fail_after(5),
        pytest.raises(
            NotImplementedError,
            match=r"^subclasses of AsyncChat must implement collect_incoming_data$",
        ),
    ):
        await chat.run()


def _regex(source: bytes) -> Any:
    import re  # here rather than at the top: these tests were appended to the file

    return re.compile(source)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    ("term", "data", "frames", "matched"),
    [
        (
            _regex(rb"\r?\n"),
            b"dos\r\nunix\n\r\nold\r\n",
            [b"dos", b"unix", b"", b"old"],
            [b"\r\n", b"\n", b"\r\n", b"\r\n"],
        ),
        # A greedy match at the end of the input so far waits for the next byte, or for EOF.
        (
            _regex(rb"\n\n+"),
            b"one\ntwo\n\nthree\n\n\n",
            [b"one\ntwo", b"three"],
            [b"\n\n", b"\n\n\n"],
        ),
        (
            (b"\r\n", b"\n", b";"),
            b"dos\r\nunix\nsemi;old\r\n",
            [b"dos", b"unix", b"semi", b"old"],
            [b"\r\n", b"\n", b";", b"\r\n"],
        ),
    ],
    ids=["regex", "greedy-regex", "tuple"],
)
async def test_regex_and_tuple_terminators_frame_and_tell_what_matched(
    term: Any, data: bytes, frames: list[bytes], matched: list[bytes], bytewise: bool
) -> None:
    seen: list[bytes | int | None] = []

    class Recorder(Lines):
        def on_frame(self, frame: bytes) -> None:
            seen.append(self.last_terminator)

    client, server = trio.testing.memory_stream_pair()
    chat = Recorder(server, term)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
                await client.send_all(chunk)
                await trio.testing.wait_all_tasks_blocked()
            await client.send_eof()
            await read_all(client)
    assert chat.frames == frames
    assert seen == matched
    assert chat.last_terminator == matched[-1]
    assert chat.get_terminator() == term  # a searching terminator stays set


class PullCounter:
    """Counts how many pieces a producer of each kind has handed out."""

    def __init__(self) -> None:
        self.pulled = 0

    def producer(self, count: int, size: int) -> trio_chat.Producer:
        """An asynchat-style producer: ``more()`` until it returns ``b""``."""
        pieces = self.pieces(count, size)

        class More:
            def more(self) -> bytes:
                return next(pieces, b"")

        return More()

    def pieces(self, count: int, size: int) -> Iterator[bytes]:
        for _ in range(count):
            self.pulled += 1
            yield b"p" * size

    async def async_pieces(self, count: int, size: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            await trio.lowlevel.checkpoint()
            self.pulled += 1
            yield b"p" * size


@pytest.mark.parametrize("kind", ["more()", "iterable", "async iterable"])
async def test_producers_are_pulled_only_as_fast_as_the_peer_reads(kind: str) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    chat = Lines(server)
    counter = PullCounter()
    if kind == "more()":
        chat.push_with_producer(counter.producer(100, 1000))
    elif kind == "iterable":
        chat.push_with_producer(counter.pieces(100, 1000))
    else:
        chat.push_with_producer(counter.async_pieces(100, 1000))
    chat.close_when_done()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await trio.testing.wait_all_tasks_blocked()
            assert counter.pulled <= 1  # nobody read: at most the piece being written
            got = await client.receive_some(1000)
            await trio.testing.wait_all_tasks_blocked()
            assert len(got) == 1000
            assert counter.pulled <= 2
            rest = await read_all(client)
    assert len(got) + len(rest) == 100_000
    assert counter.pulled == 100


async def test_idle_timeout_closes_a_peer_that_neither_sends_nor_reads(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The receive loop writes its own replies: while it waits for a peer that does not read, it
    # does not wait for input, so the idle timeout has to cover that write too.
    class Idle(Lines):
        idle_timeout = 10.0

    client, server = trio.testing.lockstep_stream_pair()  # no buffer: the reply cannot be sent
    chat = Idle(server)
    caplog.set_level(logging.INFO, logger="trio_chat")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"hello\n")
            start = trio.current_time()
            await chat.run()
            assert 10 <= trio.current_time() - start <= 11
    assert chat.frames == [b"hello"]
    assert "no input and a blocked write for 10.0 seconds (idle_timeout)" in caplog.text
    while await client.receive_some():  # the server's end is closed: EOF follows
        pass


async def test_frame_timeout_closes_a_trickling_peer_not_a_quiet_one(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[BaseException | None] = []

    class Echo(AsyncChat):
        frame_timeout = 5.0

        def __init__(self, stream: trio.abc.Stream) -> None:
            super().__init__(stream)
            self.set_terminator(b"\n")
            self.pieces: list[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.pieces.append(data)

        def found_terminator(self) -> None:
            self.push(b"".join(self.pieces) + b"\n")
            self.pieces.clear()

        def connection_lost(self, exc: BaseException | None) -> None:
            ended.append(exc)

    caplog.set_level(logging.INFO, logger="trio_chat")
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Echo(server).run)
            await client.send_all(b"hi\n")
            assert await client.receive_some() == b"hi\n"
            await trio.sleep(60)  # quiet between frames: no limit
            started = trio.current_time()
            for byte in b"slow line that never ends":
                await client.send_all(bytes([byte]))
                await trio.sleep(1.0)
                if ended:
                    break
            assert await client.receive_some() == b""  # closed
            assert 5.0 <= trio.current_time() - started <= 6.0
    assert len(ended) == 1
    assert isinstance(ended[0], trio.TooSlowError)
    assert "(frame_timeout)" in caplog.text


async def test_close_when_done_with_unread_pipelined_input_is_not_a_reset() -> None:
    # Over TCP, closing a socket with input unread sends a reset, which makes the peer's kernel
    # drop the reply it has not read yet. The lingering close reads that input first.
    reply = b"r" * (1 << 20)

    class Quit(AsyncChat):
        def __init__(self, stream: trio.abc.Stream) -> None:
            super().__init__(stream)
            self.set_terminator(b"\n")

        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            self.push(reply)
            self.close_when_done()  # the pipelined input after QUIT is never processed

    async def handler(stream: trio.SocketStream) -> None:
        await Quit(stream).run()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"QUIT\n" + b"pipelined\n" * 10_000)
            await trio.sleep(0.2)  # the server has closed its side by now, input unread
            received = bytearray()
            while data := await client.receive_some(65536):
                received += data
            assert received == reply
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_a_write_cut_by_idle_timeout_resets_the_connection() -> None:
    # The peer stopped reading: a plain close would leave the kernel retrying the unsent
    # output for minutes (an orphaned socket); a reset frees it at once.
    ended: list[BaseException | None] = []
    gave_up = trio.Event()

    class Flood(AsyncChat):
        idle_timeout = 0.3

        def handle_connect(self) -> None:
            self.push(b"x" * (16 << 20))  # far more than the socket buffers hold

        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            pass

        def connection_lost(self, exc: BaseException | None) -> None:
            ended.append(exc)
            gave_up.set()

    async def handler(stream: trio.SocketStream) -> None:
        await Flood(stream).run()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await gave_up.wait()  # read nothing until the server gives up
            assert isinstance(ended[0], trio.TooSlowError)
            with pytest.raises(trio.BrokenResourceError):
                while await client.receive_some(1 << 20):
                    pass
            await client.aclose()
            nursery.cancel_scope.cancel()

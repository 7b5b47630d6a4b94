# pyright: strict
"""A user's program that touches every public name of trio_chat the way the docs use it.

CI type-checks it against the installed wheel, outside the checkout, with ``mypy --strict`` and
pyright (strict); ``tests/test_public_api.py`` runs it and evaluates its annotations with
:func:`typing.get_type_hints`, and checks that it still names everything in ``__all__``. It is
not a test module (pytest collects ``test_*.py`` only). Keep it plain user code: no
``type: ignore``, no casts, nothing private.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from functools import partial

import trio

import trio_chat
from trio_chat import (
    CONNECTION_LOST_TIMEOUT,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PEER_IPV6_PREFIX,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    END_OF_INPUT,
    NEED_DATA,
    AsyncChat,
    BufferEvent,
    Delimiter,
    Event,
    FramedStream,
    FrameTooLongError,
    HalfCloseableFramedStream,
    HandlerFactory,
    IncompleteFrameError,
    Producer,
    ProducerLike,
    Signal,
    StreamHandler,
    Terminator,
    TerminatorBuffer,
    TerminatorFound,
    Worker,
    WorkerCrashError,
    async_chat,
    connect_tcp,
    default_max_connections,
    find_prefix_at_end,
    open_tcp_listeners_reuseport,
    run_workers,
    serve_listeners,
    serve_tcp,
    simple_producer,
)
from trio_chat.testing import Peer, Target, byte_by_byte, every_split, exchange, open_peer

LINE: Delimiter = b"\r\n"
ANY_LINE_END: Delimiter = (b"\r\n", b"\n")
SEMICOLONS: Delimiter = re.compile(rb";+")


# ------------------------------------------------------------------ the sans-IO buffer


def is_event(value: object) -> bool:
    return isinstance(value, Event)


def split_frames(data: bytes, terminator: Terminator) -> list[bytes]:
    """Every frame of *data* (the last one may be unfinished), with the buffer alone."""
    buffer = TerminatorBuffer(terminator, max_frame_size=DEFAULT_MAX_FRAME_SIZE)
    buffer.feed(data)
    buffer.feed_eof()
    frames: list[bytes] = []
    pieces: list[bytes] = []
    while True:
        # BufferEvent: the same as Event, under a name that cannot be mistaken for trio.Event.
        event: BufferEvent = buffer.next_event()
        assert is_event(event)
        if isinstance(event, bytes):
            pieces.append(event)
        elif isinstance(event, TerminatorFound):
            frames.append(b"".join(pieces))
            pieces.clear()
        elif event is END_OF_INPUT:
            break
        else:
            assert event is NEED_DATA and isinstance(event, Signal)
            break
    if pieces:
        frames.append(b"".join(pieces))
    return frames


# ------------------------------------------------------------------ handlers


class Countdown:
    """A producer (asynchat's protocol): ``more()`` until it returns ``b""``."""

    def __init__(self, start: int) -> None:
        self.left = start

    def more(self) -> bytes:
        if self.left < 0:
            return b""
        self.left -= 1
        return b"%d\r\n" % (self.left + 1)


def reply_for(command: bytes) -> ProducerLike:
    """What the handler below pushes for a command: every kind push_with_producer takes."""
    if command == b"COUNT":
        producer: Producer = Countdown(3)
        return producer
    if command == b"BIG":
        return simple_producer(b"x" * 100 + b"\r\n", buffer_size=16)
    if command == b"PARTS":
        return [b"one ", bytearray(b"two "), memoryview(b"three\r\n")]
    return command.upper() + b"\r\n"


class Shout(AsyncChat):
    """The README's handler, with the class attributes asynchat code sets."""

    ac_in_buffer_size = 4096
    max_frame_size = 1024

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        # asynchat code tunes these per instance too.
        self.ac_in_buffer_size = 8192
        self.ac_out_buffer_size = 8192
        self.idle_timeout = 60.0
        self.set_terminator(b"\r\n")
        self.pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        if line == b"QUIT":
            self.push(b"bye\r\n")
            self.close_when_done()
        else:
            self.push_with_producer(reply_for(line))


class Legacy(async_chat):
    """asynchat's name and its counted terminator."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(4)
        self.data = b""

    def collect_incoming_data(self, data: bytes) -> None:
        self.data += data

    def found_terminator(self) -> None:
        self.push(self.data[::-1] + b"\r\n")
        self.data = b""
        left: Terminator = self.get_terminator()  # a count terminator counts down to 0
        if left == 0:
            self.set_terminator(4)


class Client(AsyncChat):
    """The client side: collects the replies until the server closes."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\r\n")
        self.lines: list[bytes] = []
        self.pieces: list[bytes] = []
        self.lost: BaseException | bool | None = False

    def handle_connect(self) -> None:
        self.push(b"hello\r\nQUIT\r\n")

    async def connection_lost(self, exc: BaseException | None) -> None:
        # An async hook gets CONNECTION_LOST_TIMEOUT seconds at most.
        with trio.move_on_after(CONNECTION_LOST_TIMEOUT):
            await trio.lowlevel.checkpoint()
        self.lost = exc

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        self.lines.append(b"".join(self.pieces))
        self.pieces.clear()


# ------------------------------------------------------------------ FramedStream


async def framed_session(stream: trio.SocketStream) -> list[bytes]:
    """Pull-style framing over a socket: ``FramedStream(socket_stream).send_eof()`` type-checks."""
    async with FramedStream(stream, max_bytes=1024) as framed:
        await framed.send_all(b"a;b;;c\r\nhello\n")
        await framed.send_eof()
        got = [await framed.receive_until(SEMICOLONS), await framed.receive_until(SEMICOLONS)]
        got.append(await framed.receive_until(LINE))
        async for line in framed.frames(ANY_LINE_END):
            got.append(line)
    return got


async def read_all_frames(framed: FramedStream) -> list[bytes]:
    """Frames until the end; an unfinished last frame and a too-long one are reported."""
    frames: list[bytes] = []
    try:
        while True:
            frames.extend(await framed.receive_frames(LINE))
    except trio.EndOfChannel:
        pass
    except IncompleteFrameError as exc:
        frames.append(b"incomplete: " + exc.partial)
    except FrameTooLongError as exc:
        frames.append(b"too long: " + str(exc).encode())
    return frames


async def length_prefixed(stream: trio.abc.Stream) -> None:
    """A trio-style handler, as ``open_peer`` and ``trio.serve_tcp`` run them."""
    framed = FramedStream(stream)
    length = int(await framed.receive_until(b"\n"))
    await framed.send_all(await framed.receive_exactly(length))


async def frame_lister(stream: trio.abc.Stream) -> None:
    framed = FramedStream(stream, max_bytes=8)
    await framed.send_all(b"|".join(await read_all_frames(framed)))


async def echo_all(stream: trio.SocketStream) -> None:
    """A raw echo server for framed_session (trio.serve_tcp style)."""
    async with stream:
        async for data in stream:
            await stream.send_all(data)


# ------------------------------------------------------------------ serving and connecting


async def serve_and_connect() -> list[bytes]:
    """serve_tcp and serve_listeners with their options, and connect_tcp, on loopback."""
    factory: HandlerFactory = Shout
    shutdown = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                partial(
                    serve_tcp,
                    factory,
                    0,
                    host="127.0.0.1",
                    max_connections=min(DEFAULT_MAX_CONNECTIONS, default_max_connections()),
                    max_connections_per_peer=DEFAULT_MAX_CONNECTIONS_PER_PEER,
                    peer_ipv6_prefix=DEFAULT_PEER_IPV6_PREFIX,
                    grace_period=DEFAULT_GRACE_PERIOD,
                    tls_handshake_timeout=DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                    shutdown_event=shutdown,
                )
            )
            port: int = listeners[0].socket.getsockname()[1]
            client = await connect_tcp(Client(), "127.0.0.1", port)
            assert client.lost is None  # an orderly end: the server closed after "bye"

            raw = await open_tcp_listeners_reuseport(0, host="127.0.0.1")
            await nursery.start(partial(serve_listeners, partial(Legacy), raw, idle_timeout=5.0))
            legacy_port: int = raw[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", legacy_port)
            async with FramedStream(stream) as framed:
                await framed.send_all(b"abcd")
                legacy = await framed.receive_until(b"\r\n")

            echo: list[trio.SocketListener] = await nursery.start(
                partial(trio.serve_tcp, echo_all, 0, host="127.0.0.1")
            )
            echo_port: int = echo[0].socket.getsockname()[1]
            framed_lines = await framed_session(await trio.open_tcp_stream("127.0.0.1", echo_port))
            assert framed_lines == [b"a", b"b", b"c", b"hello"], framed_lines

            stream_handler: StreamHandler = length_prefixed
            served: list[trio.SocketListener] = await nursery.start(
                partial(serve_tcp, stream_handler, 0, host="127.0.0.1")
            )
            served_port: int = served[0].socket.getsockname()[1]
            async with FramedStream(await trio.open_tcp_stream("127.0.0.1", served_port)) as framed:
                await framed.send_all(b"3\nabc")
                assert await framed.receive_exactly(3) == b"abc"

            shutdown.set()
            nursery.cancel_scope.cancel()
    return [*client.lines, legacy]


# ------------------------------------------------------------------ worker processes


async def worker_main(worker: Worker) -> None:
    """What each worker process runs (module level, so that it pickles)."""
    await serve_tcp(Shout, 7777, host="127.0.0.1", shutdown_event=worker.shutdown_event)


def serve_on_every_core() -> int:
    """Not run by main(): starting processes is the workers' tests' job."""
    try:
        run_workers(
            worker_main,
            2,
            stop_timeout=DEFAULT_STOP_TIMEOUT,
            max_restarts=DEFAULT_MAX_RESTARTS,
            restart_window=DEFAULT_RESTART_WINDOW,
        )
    except WorkerCrashError as exc:
        print(f"worker {exc.number} kept crashing (exit code {exc.exitcode})")
        return 1
    return 0


# ------------------------------------------------------------------ testing helpers


def splits(data: bytes) -> Iterator[list[bytes]]:
    yield byte_by_byte(data)
    yield from every_split(data)


async def conversation(target: Target) -> bytes:
    async with open_peer(target) as peer:
        await converse(peer)
        return await peer.receive_all_until_eof()


async def converse(peer: Peer) -> None:
    await peer.send_chunks([b"hel", b"lo\r", b"\nQU", b"IT\r\n"])


async def replies() -> AsyncIterator[bytes]:
    for chunks in splits(b"a\r\nQUIT\r\n"):
        yield await exchange(Shout(), chunks)


async def main() -> None:
    assert trio_chat.__version__
    assert find_prefix_at_end(b"line\r", b"\r\n") == 1
    assert split_frames(b"a\r\nb\r\nc", b"\r\n") == [b"a", b"b", b"c"]
    assert split_frames(b"abcdef", 4) == [b"abcd", b"ef"]
    assert split_frames(b"x;y", (b";", b",")) == [b"x", b"y"]
    with trio.fail_after(10):
        assert await conversation(Shout()) == b"HELLO\r\nbye\r\n"
        handler: Target = length_prefixed
        assert await exchange(handler, b"3\nabcdef") == b"abc"
        assert await exchange(frame_lister, b"a\r\nb\r\nc") == b"a|b|incomplete: c"
        too_long = await exchange(frame_lister, b"a\r\n0123456789\r\n")
        assert too_long.startswith(b"a|too long: "), too_long
        assert await exchange(Shout(), b"COUNT\r\n") == b"3\r\n2\r\n1\r\n0\r\n"
        assert await exchange(Shout(), b"BIG\r\n") == b"x" * 100 + b"\r\n"
        assert await exchange(Shout(), b"PARTS\r\n") == b"one two three\r\n"
        async for reply in replies():
            assert reply == b"A\r\nbye\r\n", reply
        async with open_peer(Shout()) as peer:
            half: HalfCloseableFramedStream = peer
            await half.send_eof()
        assert await serve_and_connect() == [b"HELLO", b"bye", b"dcba"]


if __name__ == "__main__":
    trio.run(main)

"""Attacks on AsyncChat: hostile peers and careless handlers (issue 10).

Each test plays a peer or a handler that does what it should not (never reads, trickles, resets
mid-write, sends garbage or endless frames; hooks that raise or block; pushes racing a close or
a TLS switch) over real loopback sockets or trio.testing streams, and checks the contract of
``docs/design.rst`` and ``AsyncChat``'s docstrings: bounded memory, bounded time, one
``connection_lost()``, errors as themselves, nothing lost that was promised.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any, Generic, TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from stream_helpers import read_all, stalled_pair

from trio_chat import AsyncChat, FrameTooLongError
from trio_chat.testing import byte_by_byte, every_split, exchange

TIMEOUT = 30  # seconds; the bound of every test that runs on the real clock (a loaded CI)
LOCALHOST = "127.0.0.1"


class BoomError(Exception):
    pass


# ------------------------------------------------------------------------------------ helpers


class Chat(AsyncChat):
    """Collects frames and records every hook call and how the connection ended.

    ``answer(frame)`` decides what to do with a frame (default: echo it upper-cased).
    """

    def __init__(self, stream: trio.abc.Stream | None = None, term: Any = b"\n") -> None:
        super().__init__(stream)
        self.set_terminator(term)
        self.frame = bytearray()
        self.frames: list[bytes] = []
        self.collected = 0
        self.lost: list[BaseException | None] = []
        self.lost_at: float | None = None
        self.ended = trio.Event()  # connection_lost() was called

    def collect_incoming_data(self, data: bytes) -> None:
        self.collected += len(data)
        self.frame += data

    def found_terminator(self) -> Awaitable[None] | None:
        frame = bytes(self.frame)
        self.frame.clear()
        self.frames.append(frame)
        return self.answer(frame)

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        self.push(frame.upper() + b"\n")
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        self.lost_at = trio.current_time()
        self.ended.set()


ChatT = TypeVar("ChatT", bound=Chat)


class Served(Generic[ChatT]):
    """A ``trio.serve_tcp`` handler that runs ``factory(stream)`` and records how each ``run()``
    ended (None, or the exception it raised)."""

    def __init__(self, factory: Callable[[trio.SocketStream], ChatT]) -> None:
        self.factory = factory
        self.chats: list[ChatT] = []
        self.outcomes: list[BaseException | None] = []
        self.done = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        chat = self.factory(stream)
        self.chats.append(chat)
        try:
            await chat.run()
        except Exception as exc:
            self.outcomes.append(exc)
        else:
            self.outcomes.append(None)
        finally:
            self.done.set()


@contextlib.asynccontextmanager
async def serving(handler: Served[Any]) -> AsyncIterator[trio.SocketStream]:
    """Serve *handler* on a loopback port; yield a client connected to it."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream(LOCALHOST, port)
        try:
            yield client
        finally:
            await trio.aclose_forcefully(client)
            nursery.cancel_scope.cancel()


async def reset(stream: trio.SocketStream) -> None:
    """Close *stream* with SO_LINGER 0: the kernel sends a reset, not a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def send_ignoring_reset(stream: trio.abc.SendStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


# ----------------------------------------------------------------- a peer that never reads


class Answering(Chat):
    """Answers every line with ``reply``; records the queue at every hook, before and after
    its push, and how many bytes of input it was handed."""

    idle_timeout = 10.0

    def __init__(self, stream: trio.abc.Stream, reply: bytes) -> None:
        super().__init__(stream)
        self.reply = reply
        self.peak = 0

    def watch(self) -> None:
        self.peak = max(self.peak, self.queued_bytes)

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        self.watch()
        self.push(self.reply)
        self.watch()
        return None


class AsyncAnswering(Answering):
    def answer(self, frame: bytes) -> Awaitable[None] | None:
        async def hook() -> None:
            self.watch()
            await trio.lowlevel.checkpoint()
            self.push(self.reply)
            self.watch()
            await trio.lowlevel.checkpoint()
            self.watch()

        return hook()


class AnsweringBehindAProducer(Answering):
    """Starts with an endless producer, so the send loop is busy and every reply queues."""

    def handle_connect(self) -> None:
        self.push_with_producer(iter(lambda: b"p" * 65536, b""))


@pytest.mark.parametrize("reply_size", [1100, 70_000, 1 << 20])
@pytest.mark.parametrize("handler", [Answering, AsyncAnswering, AnsweringBehindAProducer])
async def test_a_peer_that_never_reads_holds_bounded_output_until_idle_timeout(
    autojump_clock: trio.testing.MockClock, handler: type[Answering], reply_size: int
) -> None:
    client, server = stalled_pair()
    chat = handler(server, b"r" * reply_size)
    # Enough requests to ask for 64 MiB of replies (no more: without backpressure the test
    # should fail, not eat the machine's memory).
    requests = min(100_000, (64 << 20) // reply_size)
    with trio.fail_after(100):
        await client.send_all(b"x\n" * requests)  # nothing is ever read
        start = trio.current_time()
        await chat.run()
        elapsed = trio.current_time() - start
    assert chat.peak <= chat.out_high_water + reply_size
    assert len(chat.frames) < requests  # it stopped reading
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.TooSlowError)
    assert chat.idle_timeout <= elapsed <= 2 * chat.idle_timeout


async def test_a_loopback_peer_that_never_reads_holds_bounded_output_until_idle_timeout() -> None:
    reply = b"r" * 1100
    requests = (64 << 20) // len(reply)

    def factory(stream: trio.SocketStream) -> Answering:
        chat = Answering(stream, reply)
        chat.idle_timeout = 0.3
        return chat

    served = Served(factory)
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client, trio.open_nursery() as nursery:
            # Requests for 64 MiB of replies: far more than the kernel's buffers take.
            nursery.start_soon(send_ignoring_reset, client, b"x\n" * requests)
            await served.done.wait()
            nursery.cancel_scope.cancel()
    (chat,) = served.chats
    assert served.outcomes == [None]
    assert chat.peak <= chat.out_high_water + len(reply)
    assert len(chat.frames) < requests
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.TooSlowError)


# ----------------------------------------------------------------- a peer that trickles


TRICKLE_TERMINATORS = {
    "bytes": b"\r\n",
    "count": 1000,
    "tuple": (b"\r\n", b"\n"),
    "regex": re.compile(rb"\r?\n"),
}


class Trickled(Chat):
    idle_timeout = 10.0

    def answer(self, frame: bytes) -> None:
        self.push(b"got %d\n" % len(frame))
        self.set_terminator(self.first_terminator)

    def __init__(self, stream: trio.abc.Stream, term: Any) -> None:
        super().__init__(stream, term)
        self.first_terminator = term


def first_frame(term: Any) -> bytes:
    return b"x" * 1000 if isinstance(term, int) else b"hello\r\n"


@pytest.mark.parametrize("kind", list(TRICKLE_TERMINATORS))
async def test_frame_timeout_cuts_a_peer_that_trickles_a_byte_at_a_time(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    term = TRICKLE_TERMINATORS[kind]
    client, server = trio.testing.memory_stream_pair()
    chat = Trickled(server, term)
    chat.frame_timeout = 30.0
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(first_frame(term))
            assert await client.receive_some() == b"got %d\n" % len(first_frame(term).strip())
            await trio.sleep(8)  # quiet between frames, within idle_timeout: not a frame
            started = trio.current_time()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(999):  # never a whole frame: no terminator, fewer than 1000 bytes
                    await client.send_all(b"y")
                    await trio.sleep(5.0)  # well within idle_timeout
                    if chat.lost:
                        break
            assert await client.receive_some() == b""  # closed
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.TooSlowError)
    assert chat.lost_at is not None
    assert 30.0 <= chat.lost_at - started <= 36.0


@pytest.mark.parametrize("kind", list(TRICKLE_TERMINATORS))
async def test_idle_timeout_alone_does_not_cut_a_trickling_peer(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    # The reason frame_timeout exists: a byte every few seconds resets the idle clock forever.
    term = TRICKLE_TERMINATORS[kind]
    client, server = trio.testing.memory_stream_pair()
    chat = Trickled(server, term)
    assert chat.frame_timeout is None
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            for _ in range(999):
                await client.send_all(b"y")
                await trio.sleep(5.0)
            assert chat.lost == []  # 5,000 s of trickling and still open
            await client.send_all(b"y" if kind == "count" else b"\r\n")
            assert await client.receive_some() == (
                b"got 1000\n" if kind == "count" else b"got 999\n"
            )
            await client.send_eof()
    assert chat.lost == [None]


async def test_frame_timeout_cuts_a_trickling_peer_over_loopback() -> None:
    def factory(stream: trio.SocketStream) -> Chat:
        chat = Chat(stream)
        chat.idle_timeout = 1.0  # far above the trickle: a loaded CI must not make it the cut
        chat.frame_timeout = 0.3
        return chat

    served = Served(factory)
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client:
            await client.send_all(b"hi\n")
            assert await client.receive_some() == b"HI\n"
            started = trio.current_time()
            with contextlib.suppress(trio.BrokenResourceError):
                while not served.done.is_set():
                    await client.send_all(b"y")
                    await trio.sleep(0.05)  # well within idle_timeout
            # The end: EOF, or a reset when trickled bytes were still unread at the close.
            with contextlib.suppress(trio.BrokenResourceError):
                assert await client.receive_some() == b""
    (chat,) = served.chats
    assert served.outcomes == [None]
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.TooSlowError)
    assert chat.lost_at is not None
    assert chat.lost_at - started >= 0.3


# ----------------------------------------------------------------- a peer that resets


class Resettable(Chat):
    """Answers a request with a big reply, in one of several ways."""

    def __init__(self, stream: trio.abc.Stream, mode: str, idle_timeout: float | None) -> None:
        super().__init__(stream)
        self.mode = mode
        self.idle_timeout = idle_timeout
        self.pulled = 0

    def pieces(self) -> Iterator[bytes]:
        while True:
            self.pulled += 1
            yield b"p" * 65536

    def answer(self, frame: bytes) -> None:
        if self.mode == "push":
            self.push(b"r" * (16 << 20))
        elif self.mode == "producer":
            self.push_with_producer(self.pieces())
        elif self.mode == "push, close_when_done":
            self.push(b"r" * (16 << 20))
            self.close_when_done()
        elif self.mode == "producer, close_when_done":
            self.push_with_producer(self.pieces())
            self.close_when_done()


@pytest.mark.parametrize("idle_timeout", [None, 30.0], ids=["no idle_timeout", "idle_timeout"])
@pytest.mark.parametrize(
    "mode", ["push", "producer", "push, close_when_done", "producer, close_when_done", "idle"]
)
async def test_a_peer_that_resets_mid_write_ends_the_connection_quietly(
    mode: str, idle_timeout: float | None
) -> None:
    served = Served(lambda stream: Resettable(stream, mode, idle_timeout))
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client:
            if mode != "idle":
                await client.send_all(b"GET\n")
                got = 0
                while got < 200_000:  # the server is writing
                    got += len(await client.receive_some())
            else:
                await trio.sleep(0.05)  # the server is waiting for input
            await reset(client)
            await served.done.wait()
    (chat,) = served.chats
    assert served.outcomes == [None]  # run() returned
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.BrokenResourceError)
    assert chat.pulled < 1000


# ----------------------------------------------------------------- garbage and huge frames

HUGE_TERMINATORS = {
    "bytes": b"\n",
    "bytes, prefixes only": b"\r\n",
    "long bytes": b"--boundary--",
    "tuple": (b"\r\n", b"\n"),
    "regex": re.compile(rb"\r?\n"),
    "regex, unbounded": re.compile(rb"\n\n+"),
}


def endless(kind: str) -> bytes:
    """10 MiB that never hold the terminator of *kind*, made to tease its search."""
    if kind == "bytes, prefixes only":
        return b"\r" * (10 << 20)
    if kind == "long bytes":
        return b"--boundary-x" * ((10 << 20) // 12)
    if kind == "regex, unbounded":
        return b"\nx" * (5 << 20)
    return b"x" * (10 << 20)


@pytest.mark.parametrize("kind", list(HUGE_TERMINATORS))
async def test_10_mib_without_a_terminator_raise_frame_too_long_after_the_limit(kind: str) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Chat(server, HUGE_TERMINATORS[kind])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_ignoring_reset, client, endless(kind))
            with pytest.raises(FrameTooLongError, match="without the terminator") as caught:
                await chat.run()
            assert await read_all(client) == b""  # closed
    assert chat.frames == []
    assert chat.collected == chat.max_frame_size  # exactly the first max_frame_size bytes
    assert chat.lost == [caught.value]
    assert caught.value.limit == chat.max_frame_size


async def test_10_mib_without_a_terminator_over_loopback() -> None:
    served = Served(lambda stream: Chat(stream))
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client:
            await send_ignoring_reset(client, b"x" * (10 << 20))
            await served.done.wait()
    (chat,) = served.chats
    (outcome,) = served.outcomes
    assert isinstance(outcome, FrameTooLongError)  # as itself, not in a group
    assert chat.collected == chat.max_frame_size
    assert chat.lost == [outcome]


@pytest.mark.parametrize("seed", range(4))
async def test_random_garbage_gives_the_frames_it_holds_or_frame_too_long(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(200_000)
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 100, 4096, 65536])
        chunks.append(data[pos : pos + size])
        pos += size
    client, server = trio.testing.memory_stream_pair()
    chat = Chat(server, b"\n")
    chat.max_frame_size = 600  # random bytes hold a newline every 256 bytes on average
    error: FrameTooLongError | None = None
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for chunk in chunks:
                    await send_ignoring_reset(client, chunk)
                await send_ignoring_reset(client, b"\n")
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await client.send_eof()

            nursery.start_soon(send)
            try:
                await chat.run()
            except FrameTooLongError as exc:
                error = exc
    handed = b"".join(frame + b"\n" for frame in chat.frames) + bytes(chat.frame)
    assert (data + b"\n").startswith(handed)
    assert all(len(frame) <= 600 for frame in chat.frames)
    if error is None:
        assert handed == data + b"\n"
        assert chat.lost == [None]
    else:
        assert len(chat.frame) == 600
        assert chat.lost == [error]


# ----------------------------------------------------------------- hooks that raise


class Raising(Chat):
    """Raises BoomError (sync or async) from the hook named *where*, after a push."""

    def __init__(self, stream: trio.abc.Stream, where: str, is_async: bool) -> None:
        super().__init__(stream)
        self.where = where
        self.is_async = is_async

    def hook(self, name: str) -> Awaitable[None] | None:
        if self.where != name:
            return None
        if self.is_async:

            async def fail() -> None:
                await trio.lowlevel.checkpoint()
                self.push(b"before " + name.encode() + b"\n")
                raise BoomError(name)

            return fail()
        self.push(b"before " + name.encode() + b"\n")
        raise BoomError(name)

    def collect_incoming_data(self, data: bytes) -> None:
        super().collect_incoming_data(data)
        self.hook("collect")

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        return self.hook("found")

    def handle_connect(self) -> Awaitable[None] | None:
        return self.hook("connect")

    def handle_close(self) -> Awaitable[None] | None:
        return self.hook("close") or super().handle_close()


@pytest.mark.parametrize(
    ("where", "is_async"),
    [
        ("collect", False),
        ("found", False),
        ("found", True),
        ("connect", False),
        ("connect", True),
        ("close", False),
        ("close", True),
    ],
)
async def test_a_hook_that_raises_ends_run_with_its_exception_after_its_pushes(
    where: str, is_async: bool
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Raising(server, where, is_async)
    with trio.fail_after(TIMEOUT):
        await client.send_all(b"line\n")
        await client.send_eof()
        with pytest.raises(BoomError, match=f"^{where}$") as caught:
            await chat.run()
        assert await read_all(client) == b"before " + where.encode() + b"\n"
    assert chat.lost == [caught.value]
    assert chat.closed


class LostRaises(Chat):
    def __init__(self, stream: trio.abc.Stream, is_async: bool) -> None:
        super().__init__(stream)
        self.is_async = is_async

    def answer(self, frame: bytes) -> None:
        if frame == b"boom":
            raise KeyError(frame)
        super().answer(frame)

    def connection_lost(self, exc: BaseException | None) -> Any:
        super().connection_lost(exc)
        if self.is_async:

            async def fail() -> None:
                await trio.lowlevel.checkpoint()
                raise BoomError("connection_lost")

            return fail()
        raise BoomError("connection_lost")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("end", ["orderly", "hook error", "idle timeout"])
async def test_connection_lost_that_raises_is_raised_only_over_an_orderly_end(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    end: str,
    is_async: bool,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = LostRaises(server, is_async)
    chat.idle_timeout = 10.0
    caplog.set_level(logging.ERROR, logger="trio_chat")
    with trio.fail_after(100):
        if end == "orderly":
            await client.send_all(b"a\n")
            await client.send_eof()
            with pytest.raises(BoomError, match="connection_lost"):
                await chat.run()
            assert chat.lost == [None]
        elif end == "hook error":
            await client.send_all(b"boom\n")
            with pytest.raises(KeyError):
                await chat.run()
            assert len(chat.lost) == 1
            assert isinstance(chat.lost[0], KeyError)
            assert "connection_lost() of the connection to" in caplog.text
        else:
            await chat.run()  # the idle timeout is not an error of run()
            assert len(chat.lost) == 1
            assert isinstance(chat.lost[0], trio.TooSlowError)
            assert "connection_lost() of the connection to" in caplog.text
        assert await read_all(client) in (b"", b"A\n")


# ----------------------------------------------------------------- hooks that block


class Blocking(Chat):
    """An async hook (named *where*) that pushes ``working``, then waits ``delay`` seconds
    (None: forever), then pushes ``done``; records whether it was cancelled."""

    def __init__(self, stream: trio.abc.Stream, where: str, delay: float | None) -> None:
        super().__init__(stream)
        self.where = where
        self.delay = delay
        self.hook_cancelled = False
        self.in_hook = trio.Event()

    async def block(self) -> None:
        self.push(b"working\n")
        self.in_hook.set()
        try:
            if self.delay is None:
                await trio.sleep_forever()
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.hook_cancelled = True
            raise
        self.push(b"done\n")

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        return self.block() if self.where == "found" else super().answer(frame)

    def handle_connect(self) -> Awaitable[None] | None:
        return self.block() if self.where == "connect" else None

    def handle_close(self) -> Awaitable[None] | None:
        return self.block() if self.where == "close" else super().handle_close()


async def start_blocking(chat: Blocking, client: trio.abc.HalfCloseableStream) -> None:
    if chat.where == "found":
        await client.send_all(b"go\n")
    elif chat.where == "close":
        await client.send_eof()
    await chat.in_hook.wait()


@pytest.mark.parametrize("where", ["found", "connect", "close"])
async def test_close_from_another_task_ends_a_hook_that_blocks_forever(
    autojump_clock: trio.testing.MockClock, where: str
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Blocking(server, where, None)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await start_blocking(chat, client)
            await trio.sleep(100)
            assert chat.lost == []
            chat.close()
            closed_at = trio.current_time()
            await read_all(client)  # EOF comes; what was queued may or may not be written
    assert chat.lost == [None]
    assert chat.lost_at == closed_at  # at once
    assert chat.hook_cancelled


@pytest.mark.parametrize("where", ["found", "connect", "close"])
async def test_close_when_done_from_another_task_waits_for_a_blocking_hook(
    autojump_clock: trio.testing.MockClock, where: str
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Blocking(server, where, 50.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await start_blocking(chat, client)
            started = trio.current_time()
            await trio.sleep(10)
            chat.close_when_done()
            assert await read_all(client) == b"working\ndone\n"
            assert trio.current_time() - started == pytest.approx(50.0)
    assert chat.lost == [None]
    assert not chat.hook_cancelled


async def test_close_when_done_waits_for_a_hook_blocked_forever_but_close_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = Blocking(server, "found", None)
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await start_blocking(chat, client)
            chat.close_when_done()
            await trio.sleep(1000)
            assert chat.lost == []  # graceful: it waits for the hook
            chat.close()
            closed_at = trio.current_time()
            await read_all(client)
    assert chat.lost == [None]
    assert chat.lost_at == closed_at
    assert chat.hook_cancelled


async def test_after_close_when_done_from_another_task_only_the_running_hook_may_push(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # ATTACK finding B (REQUESTS.md), fixed in fc36818.
    client, server = trio.testing.memory_stream_pair()
    chat = Blocking(server, "found", 50.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await start_blocking(chat, client)
            chat.close_when_done()
            # close_when_done(): "later pushes raise trio.ClosedResourceError"; the hook in
            # progress may still answer its request, another task may not add to the reply.
            with pytest.raises(trio.ClosedResourceError):
                chat.push(b"late\n")
            assert await read_all(client) == b"working\ndone\n"


async def test_an_async_connection_lost_that_blocks_is_cut_after_its_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_chat._chat import CONNECTION_LOST_TIMEOUT

    class SlowLost(Chat):
        async def connection_lost(self, exc: BaseException | None) -> None:  # type: ignore[override]
            super().connection_lost(exc)
            await trio.sleep_forever()

    client, server = trio.testing.memory_stream_pair()
    chat = SlowLost(server)
    with trio.fail_after(1000):
        await client.send_eof()
        started = trio.current_time()
        await chat.run()
        assert trio.current_time() - started == pytest.approx(CONNECTION_LOST_TIMEOUT)
    assert chat.lost == [None]


# ----------------------------------------------------------------- producers that misbehave


def more_raising() -> object:
    class Producer:
        calls = 0

        def more(self) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise BoomError("producer")
            return b"first"

    return Producer()


def more_returning_str() -> object:
    class Producer:
        calls = 0

        def more(self) -> Any:
            self.calls += 1
            return b"first" if self.calls == 1 else "text"

    return Producer()


def iterator_raising() -> object:
    def gen() -> Iterator[bytes]:
        yield b"first"
        raise BoomError("producer")

    return gen()


def async_iterator_raising() -> object:
    async def agen() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.lowlevel.checkpoint()
        raise BoomError("producer")

    return agen()


def iterator_yielding_int() -> object:
    return iter([b"first", 42])


PRODUCERS: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "more() raises": (more_raising, BoomError, "producer"),
    "more() returns str": (more_returning_str, TypeError, r"producer .* not 'str'"),
    "iterator raises": (iterator_raising, BoomError, "producer"),
    "async iterator raises": (async_iterator_raising, BoomError, "producer"),
    "iterator yields int": (iterator_yielding_int, TypeError, r"producer .* not 'int'"),
}


@pytest.mark.parametrize("kind", list(PRODUCERS))
async def test_a_producer_that_raises_ends_run_with_its_exception(kind: str) -> None:
    make, error, match = PRODUCERS[kind]
    client, server = trio.testing.memory_stream_pair()
    chat = Chat(server)
    chat.push_with_producer(make())  # type: ignore[arg-type]
    with trio.fail_after(TIMEOUT):
        with pytest.raises(error, match=match) as caught:
            await chat.run()
        assert await read_all(client) == b"first"
    assert chat.lost == [caught.value]


async def test_close_from_another_task_ends_an_async_producer_that_blocks() -> None:
    finalised: list[bool] = []

    async def agen() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await trio.sleep_forever()
            yield b"never"
        finally:
            finalised.append(True)

    client, server = trio.testing.memory_stream_pair()
    chat = Chat(server)
    chat.push_with_producer(agen())
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            assert await client.receive_some() == b"first"
            await trio.testing.wait_all_tasks_blocked()
            chat.close()
            assert await read_all(client) == b""
    assert chat.lost == [None]
    assert finalised == [True]


# ----------------------------------------------------------------- pushes racing the controls


async def race_pushes(
    control: str, delay: int
) -> tuple[bytes, list[bytes], int, list[BaseException | None]]:
    """Another task pushes numbered lines while the test calls *control* after *delay*
    checkpoints; the client reads everything, a few bytes at a time.

    Returns what the client received, the lines pushed, how many were pushed when the control
    was called, and what connection_lost() got.
    """
    to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
    to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()
    client = trio.StapledStream(to_server_send, to_client_receive)
    chat = Chat(trio.StapledStream(to_client_send, to_server_receive))
    pushed: list[bytes] = []
    marks: list[int] = []
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chat.run)

        async def pusher() -> None:
            for i in range(200):
                line = b"L%05d\n" % i
                try:
                    chat.push(line)
                except trio.ClosedResourceError:
                    return
                pushed.append(line)
                await trio.lowlevel.checkpoint()
            if control == "discard_buffers":
                chat.close_when_done()

        async def reader() -> None:
            while data := await client.receive_some(7):
                received.extend(data)

        nursery.start_soon(pusher)
        nursery.start_soon(reader)
        for _ in range(delay):
            await trio.lowlevel.checkpoint()
        marks.append(len(pushed))
        if control == "close":
            chat.close()
        elif control == "close_when_done":
            chat.close_when_done()
        else:
            chat.discard_buffers()
    return bytes(received), pushed, marks[0], chat.lost


@pytest.mark.parametrize("control", ["close", "close_when_done", "discard_buffers"])
async def test_pushes_from_another_task_racing_a_control(control: str) -> None:
    with trio.fail_after(TIMEOUT):
        for delay in range(0, 60, 3):
            received, pushed, mark, lost = await race_pushes(control, delay)
            assert lost == [None], delay
            everything = b"".join(pushed)
            if control == "close":
                assert len(pushed) == mark  # no push is accepted after close()
                assert everything.startswith(received), delay
            elif control == "close_when_done":
                assert len(pushed) == mark
                assert received == everything, delay  # all of it, then EOF
            else:
                lines = received.splitlines(keepends=True)
                assert b"".join(lines) == received
                assert all(re.fullmatch(rb"L\d{5}\n", line) for line in lines), delay
                assert lines == sorted(set(lines)), delay
                assert pushed[mark:] == lines[len(lines) - len(pushed) + mark :], delay


@pytest.mark.parametrize("how", ["push", "producer"])
async def test_discard_buffers_from_another_task_stops_a_big_write_between_pieces(how: str) -> None:
    # A 4 MiB reply goes out in pieces of ac_out_buffer_size to a slow reader; discard_buffers()
    # from another task must stop it after the piece being written, as in asynchat.
    to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
    to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()
    client = trio.StapledStream(to_server_send, to_client_receive)
    chat = Chat(trio.StapledStream(to_client_send, to_server_receive))
    big = b"r" * (4 << 20)
    if how == "push":
        chat.push(big)
    else:
        chat.push_with_producer([big])
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            while len(received) < 100_000:
                received += await client.receive_some(4096)
            before = len(received)
            chat.discard_buffers()
            chat.push(b"AFTER\n")
            chat.close_when_done()
            received += await read_all(client)
    assert received.endswith(b"r" * 1000 + b"AFTER\n")
    assert len(received) - before <= 2 * chat.ac_out_buffer_size + len(b"AFTER\n")
    assert chat.queued_bytes == 0
    assert chat.lost == [None]


@functools.cache
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for ``localhost`` from a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


class Wire(trio.abc.HalfCloseableStream):
    """Passes everything to *inner*, keeping the bytes written (what went on the wire)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class StartTLS(Chat):
    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream, b"\r\n")
        self.pushed = 0  # by the other task, counted by it
        self.switched_at: int | None = None

    async def upgrade(self) -> None:
        self.push(b"220 go ahead\r\n")
        self.switched_at = self.pushed
        await self.start_tls(tls_contexts()[0])

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        return self.upgrade() if frame == b"STARTTLS" else None


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One CRLF line, a byte at a time so that nothing after it is consumed (at EOF: what
    arrived of it)."""
    line = b""
    while not line.endswith(b"\r\n"):
        byte = await stream.receive_some(1)
        if not byte:
            break
        line += byte
    return line


PUSHES = 2000


@pytest.mark.parametrize("lead", [0, 1, 5, 20])
async def test_a_steady_stream_of_pushes_during_start_tls_never_leaks_plaintext(lead: int) -> None:
    client, server = trio.testing.memory_stream_pair()
    wire = Wire(server)
    chat = StartTLS(wire)
    plain: list[bytes] = []
    tls_lines: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)

            async def pusher() -> None:
                for i in range(PUSHES):  # one push per schedule point
                    chat.push(b"P%05d\r\n" % i)
                    chat.pushed = i + 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(pusher)
            for _ in range(lead):
                await trio.lowlevel.checkpoint()
            await client.send_all(b"STARTTLS\r\n")
            while (line := await read_line(client)) != b"220 go ahead\r\n":
                plain.append(line)
            secure = trio.SSLStream(client, tls_contexts()[1], server_hostname="localhost")
            await secure.do_handshake()
            while len(plain) + len(tls_lines) < PUSHES:
                tls_lines.append(await read_line(secure))
            chat.close()
    n = chat.switched_at
    assert n is not None
    assert plain == [b"P%05d\r\n" % i for i in range(n)]
    assert tls_lines == [b"P%05d\r\n" % i for i in range(n, PUSHES)]
    assert re.findall(rb"P\d{5}\r\n", bytes(wire.sent)) == plain  # no plaintext after it


@pytest.mark.xfail(
    strict=True,
    reason="ATTACK finding D (REQUESTS.md): idle_timeout does not bound the TLS handshake of "
    "start_tls(): a peer that asks for STARTTLS and then says nothing holds the connection",
)
async def test_idle_timeout_bounds_a_start_tls_handshake_the_peer_never_begins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    chat = StartTLS(server)
    chat.idle_timeout = 10.0
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"STARTTLS\r\n")
            assert await read_line(client) == b"220 go ahead\r\n"
            started = trio.current_time()
            with trio.move_on_after(10 * chat.idle_timeout):
                await chat.ended.wait()  # no ClientHello, ever
            nursery.cancel_scope.cancel()
    assert len(chat.lost) == 1
    assert isinstance(chat.lost[0], trio.TooSlowError)
    assert chat.lost_at is not None
    assert chat.lost_at - started <= 2 * chat.idle_timeout


@pytest.mark.parametrize("control", ["close", "close_when_done"])
async def test_a_control_from_another_task_during_start_tls_never_hangs(control: str) -> None:
    with trio.fail_after(TIMEOUT):
        for delay in range(0, 40, 4):
            client, server = trio.testing.memory_stream_pair()
            chat = StartTLS(server)
            async with trio.open_nursery() as nursery:

                async def serve(chat: StartTLS = chat) -> None:
                    with contextlib.suppress(trio.BrokenResourceError):  # a cut handshake
                        await chat.run()

                async def client_side(client: trio.abc.HalfCloseableStream = client) -> None:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await client.send_all(b"STARTTLS\r\n")
                        if await read_line(client) != b"220 go ahead\r\n":
                            return  # closed before the upgrade
                        secure = trio.SSLStream(
                            client, tls_contexts()[1], server_hostname="localhost"
                        )
                        await secure.do_handshake()
                        await read_all(secure)
                        await secure.aclose()

                nursery.start_soon(serve)
                nursery.start_soon(client_side)
                for _ in range(delay):
                    await trio.lowlevel.checkpoint()
                if control == "close":
                    chat.close()
                else:
                    chat.close_when_done()
            assert len(chat.lost) == 1, delay


async def test_pushes_from_another_task_never_stop_the_receive_loop() -> None:
    # ATTACK finding A (REQUESTS.md), fixed in fc36818: the receive loop, writing its own
    # replies, used to write whatever other tasks pushed meanwhile too, and read nothing more.
    # A busy chat room broadcasting to a member, one push per schedule point: the member's own
    # requests must still be read and answered while the broadcasts go on.
    client, server = trio.testing.memory_stream_pair()
    chat = Chat(server)
    pushes = 20_000
    pushed = 0
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"one\n")
            while b"ONE\n" not in received:
                received += await client.receive_some()

            async def broadcaster() -> None:
                nonlocal pushed
                for i in range(pushes):
                    try:
                        chat.push(b"news %05d\n" % i)
                    except trio.ClosedResourceError:
                        return  # the test is over
                    pushed += 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(broadcaster)
            await client.send_all(b"two\n")  # while the receive loop writes its reply
            await trio.lowlevel.checkpoint()
            await client.send_all(b"three\n")
            sent_at = pushed
            while b"THREE\n" not in received:
                received += await client.receive_some()
            answered_at = pushed
            chat.close()
    assert answered_at - sent_at < pushes // 10


# ----------------------------------------------------------------- the lingering close


class Quit(Chat):
    """Answers QUIT with ``reply`` (pushed, or as a producer), then close_when_done()."""

    def __init__(self, stream: trio.abc.Stream, reply: bytes, producer: bool) -> None:
        super().__init__(stream)
        self.reply = reply
        self.producer = producer
        self.quit_at: float | None = None

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        if frame == b"QUIT":
            if self.producer:
                self.push_with_producer(
                    iter([self.reply[i : i + 4096] for i in range(0, len(self.reply), 4096)])
                )
            else:
                self.push(self.reply)
            self.close_when_done()
            self.quit_at = trio.current_time()
        else:
            super().answer(frame)
        return None


@pytest.mark.parametrize("producer", [False, True], ids=["push", "producer"])
@pytest.mark.parametrize("reply_size", [10, 1 << 20])
@pytest.mark.parametrize("pipelined", [1000, 900_000])
async def test_pipelined_input_after_quit_never_turns_into_a_reset(
    producer: bool, reply_size: int, pipelined: int
) -> None:
    reply = b"r" * reply_size
    served = Served(lambda stream: Quit(stream, reply, producer))
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client:
            garbage = b"pipelined\n" * (pipelined // 10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"a\nQUIT\n" + garbage)
                received = await read_all(client)  # no BrokenResourceError: no reset
            assert received == b"A\n" + reply
            await client.send_eof()  # the lingering close waits for it
            await served.done.wait()
    assert served.outcomes == [None]
    assert served.chats[0].lost == [None]


class QuitAfterStartTLS(Quit):
    def answer(self, frame: bytes) -> Awaitable[None] | None:
        if frame == b"STARTTLS":
            self.push(b"220 go ahead\r\n")
            return self.start_tls(tls_contexts()[0])
        super().answer(frame)
        return None


@pytest.mark.parametrize(
    "mode",
    [
        "plain",
        pytest.param(
            "tls",
            marks=pytest.mark.xfail(
                strict=True,
                reason="ATTACK finding E (REQUESTS.md): no lingering close over TLS: the "
                "unread pipelined input turns the close into a reset that destroys the reply",
            ),
        ),
        pytest.param(
            "starttls",
            marks=pytest.mark.xfail(
                strict=True,
                reason="ATTACK finding E (REQUESTS.md): no lingering close after start_tls()",
            ),
        ),
    ],
)
async def test_pipelined_input_after_quit_never_turns_into_a_reset_over_tls(mode: str) -> None:
    # The client reads only once the server is done: whatever reset the close caused has
    # arrived by then, and makes the client's kernel throw the unread reply away.
    reply = b"r" * 60_000  # small enough for the socket buffers: the server finishes alone

    def factory(stream: trio.SocketStream) -> Quit:
        if mode == "tls":
            return Quit(trio.SSLStream(stream, tls_contexts()[0], server_side=True), reply, False)
        return QuitAfterStartTLS(stream, reply, False)

    served = Served(factory)
    with trio.fail_after(TIMEOUT):
        async with serving(served) as raw:
            stream: trio.abc.Stream = raw
            if mode != "plain":
                if mode == "starttls":
                    await raw.send_all(b"STARTTLS\n")
                    assert await read_line(raw) == b"220 go ahead\r\n"
                stream = trio.SSLStream(raw, tls_contexts()[1], server_hostname="localhost")
            await stream.send_all(b"QUIT\n" + b"pipelined\n" * 10_000)  # 100 KB: buffered
            await raw.send_eof()  # all the client has to say (what a lingering close waits for)
            await served.done.wait()
            assert await read_all(stream) == reply  # then EOF, no BrokenResourceError
    assert served.outcomes == [None]
    assert served.chats[0].lost == [None]


@pytest.mark.parametrize("peer", ["floods", "trickles"])
async def test_a_peer_that_keeps_sending_after_our_eof_cannot_hold_the_connection(
    monkeypatch: pytest.MonkeyPatch, peer: str
) -> None:
    # The documented bounds (docs/design.rst, "How a connection ends"): 2 s and 1 MiB.
    linger_time, linger_bytes = 2.0, 1 << 20

    # trio.SocketStream is final: count what the server's stream reads by patching the class.
    received: dict[trio.SocketStream, int] = {}
    receive_some = trio.SocketStream.receive_some

    async def counting(self: trio.SocketStream, max_bytes: int | None = None) -> bytes:
        data = await receive_some(self, max_bytes)
        if self in received:
            received[self] += len(data)
        return data

    monkeypatch.setattr(trio.SocketStream, "receive_some", counting)
    at_quit: list[int] = []

    def factory(stream: trio.SocketStream) -> Quit:
        received[stream] = 0

        class CountingQuit(Quit):
            def answer(self, frame: bytes) -> None:
                super().answer(frame)
                at_quit.append(received[stream])

        return CountingQuit(stream, b"bye\n", producer=False)

    served = Served(factory)
    with trio.fail_after(TIMEOUT):
        async with serving(served) as client, trio.open_nursery() as nursery:

            async def keep_sending() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while True:
                        if peer == "floods":
                            await client.send_all(b"x" * 65536)
                        else:
                            await client.send_all(b"x")
                            await trio.sleep(0.05)

            await client.send_all(b"QUIT\n")
            assert await client.receive_some() == b"bye\n"
            nursery.start_soon(keep_sending)
            with contextlib.suppress(trio.BrokenResourceError):
                assert await client.receive_some() == b""  # our EOF
            await served.done.wait()
            nursery.cancel_scope.cancel()
    (chat,) = served.chats
    assert chat.lost == [None]
    assert chat.lost_at is not None
    assert chat.quit_at is not None
    assert chat.lost_at - chat.quit_at <= linger_time + 1.0  # (a loaded CI)
    (stream,) = received
    lingered = received[stream] - at_quit[0]
    assert lingered <= linger_bytes + 65536  # plus one read


# ----------------------------------------------------------------- every chunking, same result


class Resp(Chat):
    """``$<n>\\r\\n<n bytes>\\r\\n`` bulk strings and ``PING`` lines: a count after a line."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream, b"\r\n")
        self.events: list[tuple[str, bytes | int | None]] = []
        self.body = False

    def collect_incoming_data(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "collect":
            previous = self.events[-1][1]
            assert isinstance(previous, bytes)
            self.events[-1] = ("collect", previous + data)
        else:
            self.events.append(("collect", data))
        super().collect_incoming_data(data)

    def found_terminator(self) -> Awaitable[None] | None:
        self.events.append(("found", self.last_terminator))
        return super().found_terminator()

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        if self.body:
            self.body = False
            self.push(b"+" + frame[:-2] + b"\r\n")
            self.set_terminator(b"\r\n")
        elif frame.startswith(b"$"):
            self.body = True
            self.set_terminator(int(frame[1:]) + 2)
        elif frame == b"QUIT":
            self.push(b"+BYE\r\n")
            self.close_when_done()
        else:
            self.push(b"+" + frame + b"\r\n")
        return None


class AsyncResp(Resp):
    def answer(self, frame: bytes) -> Awaitable[None] | None:
        async def hook() -> None:
            await trio.lowlevel.checkpoint()
            super(AsyncResp, self).answer(frame)

        return hook()


class MixedEndings(Resp):
    """Lines ending in CRLF or LF (a tuple), then ``REGEX``: records end at ``;`` or blank line."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator((b"\r\n", b"\n"))

    def answer(self, frame: bytes) -> Awaitable[None] | None:
        if frame == b"REGEX":
            self.set_terminator(re.compile(rb";|\n\n"))
        elif frame == b"RAW":
            self.set_terminator(None)  # everything until EOF
        self.push(b"%r %r\n" % (frame, self.last_terminator))
        return None

    def handle_close(self) -> None:
        self.push(b"close %d\n" % len(self.frame))
        super().handle_close()


CHUNKING_CASES: dict[str, tuple[Callable[[], Resp], bytes]] = {
    "resp": (Resp, b"PING\r\n$5\r\nhe\r\no\r\n$0\r\n\r\nQUIT\r\nPING\r\n"),
    "resp, async": (AsyncResp, b"PING\r\n$5\r\nhe\r\no\r\n$0\r\n\r\nQUIT\r\nPING\r\n"),
    "tuple, regex, none": (MixedEndings, b"a\r\nb\n\r\nREGEX\nx;y\n\nz\n;RAW\r\n\r\nrest\n"),
}


def all_chunkings(data: bytes) -> Iterator[list[bytes]]:
    yield from every_split(data)
    yield byte_by_byte(data)


@pytest.mark.parametrize("case", list(CHUNKING_CASES))
async def test_every_chunking_gives_the_same_hook_calls_and_output(case: str) -> None:
    make, data = CHUNKING_CASES[case]
    results = []
    with trio.fail_after(TIMEOUT):
        for chunks in all_chunkings(data):
            chat = make()
            out = await exchange(chat, chunks)
            results.append((chunks, chat.events, out, chat.lost))
    _, events, out, lost = results[0]
    assert lost == [None]
    assert len(events) > 4
    for chunks, other_events, other_out, other_lost in results[1:]:
        assert (other_events, other_out, other_lost) == (events, out, lost), chunks

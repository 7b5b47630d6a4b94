"""Reproducers for the numbered findings of issue 10, written as tests of the correct behaviour.

Each test was written first and failed before the fix; it was marked ``xfail(strict=True)``
while the finding stood (a strict xfail that starts passing fails the run, so the marker goes
when the fix lands).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from chat_model import RecordingStream
from stream_helpers import read_all, stalled_pair

import trio_chat
from trio_chat import AsyncChat
from trio_chat.testing import byte_by_byte, every_split, exchange

TIMEOUT = 30  # seconds; every test is bounded by it (virtual seconds under autojump_clock)


class BoomError(Exception):
    pass


async def crlf_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line, read a byte at a time so that nothing after it is consumed."""
    line = b""
    while not line.endswith(b"\r\n"):
        byte = await stream.receive_some(1)
        assert byte, f"EOF after {line!r}"
        line += byte
    return line


class Lines(AsyncChat):
    """Collects a line at a time; ``on_line(line)`` decides what to do with it."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.line = b""

    def collect_incoming_data(self, data: bytes) -> None:
        self.line += data

    def found_terminator(self) -> None:
        line, self.line = self.line, b""
        self.on_line(line)

    def on_line(self, line: bytes) -> None:
        self.push(line + b"\n")


# ------------------------------------------------------------------------------------ finding 1


class QuitInCollect(AsyncChat):
    """Calls close_when_done() from collect_incoming_data() as soon as the line reads QUIT, and
    pushes a reply in found_terminator(): it records every hook call and push outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.set_terminator(b"\n")
        self.line = b""
        self.events: list[tuple[str, bytes]] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.events.append(("collect", data))
        self.line += data
        if self.line == b"QUIT":
            self.close_when_done()

    def found_terminator(self) -> None:
        line, self.line = self.line, b""
        self.events.append(("found", line))
        try:
            self.push(b"BYE " + line + b"\n")
        except trio.ClosedResourceError:
            self.events.append(("push refused", line))


def merged(events: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Consecutive collect events joined: the data of a frame arrives in chunking-given pieces."""
    out: list[tuple[str, bytes]] = []
    for kind, data in events:
        if kind == "collect" and out and out[-1][0] == "collect":
            out[-1] = ("collect", out[-1][1] + data)
        else:
            out.append((kind, data))
    return out


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    yield from every_split(data)
    yield byte_by_byte(data)


async def test_finding_1_close_when_done_in_collect_gives_the_same_events_for_every_chunking() -> (
    None
):
    # asynchat's close_when_done() only queues a marker: a push after it is never sent, and
    # whether found_terminator() still runs depends on how the bytes arrived. AsyncChat's
    # contract (CORE_API.md) is stricter and chunking-proof: input processing stops when
    # close_when_done() is called, so no hook runs after it (here: no found_terminator() for
    # QUIT), nothing raises, and what was pushed before is sent.
    data = b"HI\nQUIT\nMORE\n"
    expected_events = [("collect", b"HI"), ("found", b"HI"), ("collect", b"QUIT")]
    results: list[tuple[list[bytes], list[tuple[str, bytes]], bytes, str]] = []
    with trio.fail_after(TIMEOUT):
        for chunks in chunkings(data):
            chat = QuitInCollect()
            error: Exception | None = None
            out = b""
            try:
                out = await exchange(chat, chunks)
            except Exception as exc:
                error = exc
            results.append((chunks, merged(chat.events), out, repr(error)))
    for chunks, events, out, outcome in results:
        assert (events, out, outcome) == (expected_events, b"BYE HI\n", "None"), chunks


# ------------------------------------------------------------------------------------ finding 2


@functools.cache
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for ``localhost`` from a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


class StartTLS(AsyncChat):
    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\r\n")
        self.line = b""
        self.upgrading = trio.Event()

    def collect_incoming_data(self, data: bytes) -> None:
        self.line += data

    async def found_terminator(self) -> None:
        line, self.line = self.line, b""
        if line == b"STARTTLS":
            self.push(b"220 go ahead\r\n")
            self.upgrading.set()
            await self.start_tls(tls_contexts()[0])


async def starttls_with_a_push_from_elsewhere(delay: int) -> tuple[bytes, bytes | None]:
    """Upgrade; another task pushes a secret *delay* checkpoints after start_tls() was called.

    Returns what the server wrote on the wire, and the line the client read through TLS.
    """
    client, server = trio.testing.memory_stream_pair()
    wire = RecordingStream(server)
    chat = StartTLS(wire)
    secret: bytes | None = None
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            with contextlib.suppress(trio.BrokenResourceError):  # a failed handshake
                await chat.run()

        async def push_from_elsewhere() -> None:
            await chat.upgrading.wait()
            for _ in range(delay):
                await trio.lowlevel.checkpoint()
            with contextlib.suppress(trio.ClosedResourceError):
                chat.push(b"SECRET\r\n")

        nursery.start_soon(serve)
        nursery.start_soon(push_from_elsewhere)
        await client.send_all(b"STARTTLS\r\n")
        assert await crlf_line(client) == b"220 go ahead\r\n"
        secure = trio.SSLStream(client, tls_contexts()[1], server_hostname="localhost")
        try:
            await secure.do_handshake()
            secret = await crlf_line(secure)
        except trio.BrokenResourceError:
            pass
        nursery.cancel_scope.cancel()
    return b"".join(wire.sent), secret


async def test_finding_2_a_push_during_start_tls_never_goes_out_in_plaintext() -> None:
    leaks = []
    with trio.fail_after(TIMEOUT):
        for delay in range(50):  # a push at each point of the upgrade in turn
            wire, secret = await starttls_with_a_push_from_elsewhere(delay)
            if b"SECRET" in wire or secret != b"SECRET\r\n":
                leaks.append((delay, secret))
    assert leaks == []


# ------------------------------------------------------------------------------------ finding 3

KIB_REPLY = b"r" * 1023 + b"\n"


class AsyncAmplifier(Lines):
    """An async found_terminator answering each line with 1 KiB; records the queue's peak."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.peak = 0
        self.frames = 0

    async def found_terminator(self) -> None:  # type: ignore[override]
        self.line = b""
        self.frames += 1
        self.push(KIB_REPLY)
        self.peak = max(self.peak, self.queued_bytes)
        await trio.lowlevel.checkpoint()


async def test_finding_3_an_async_hook_respects_backpressure() -> None:
    client, server = stalled_pair()
    chat = AsyncAmplifier(server)
    frames = 65536 // 2
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"x\n" * frames)  # one 64 KiB read
            await trio.testing.wait_all_tasks_blocked()
            assert chat.frames < frames  # the client reads nothing: the handler waits
            # Now read everything: every reply arrives, and the bound held throughout.
            got = 0
            while got < frames * len(KIB_REPLY):
                got += len(await client.receive_some())
            await client.send_eof()
    assert got == frames * len(KIB_REPLY)
    assert chat.peak <= chat.out_high_water + len(KIB_REPLY)


# ------------------------------------------------------------------------------------ finding 4


class Download(Lines):
    """Answers a line with a big producer; ``mode`` says who then closes."""

    idle_timeout = 10.0

    def __init__(self, stream: trio.abc.Stream, mode: str) -> None:
        super().__init__(stream)
        self.mode = mode
        self.pulled = 0

    def pieces(self) -> Iterator[bytes]:
        for _ in range(1000):
            self.pulled += 1
            yield b"p" * 65536

    def on_line(self, line: bytes) -> None:
        self.push_with_producer(self.pieces())
        if self.mode == "close_when_done":
            self.close_when_done()


@pytest.mark.parametrize("mode", ["close_when_done", "peer EOF"])
async def test_finding_4_idle_timeout_bounds_writing_a_producer_after_close_when_done(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    client, server = stalled_pair()
    chat = Download(server, mode)
    with trio.fail_after(20 * Download.idle_timeout):
        await client.send_all(b"GET\n")
        if mode == "peer EOF":
            await client.send_eof()  # the default handle_close() calls close_when_done()
        start = trio.current_time()
        await chat.run()  # the client never reads
        elapsed = trio.current_time() - start
    assert elapsed <= 2 * Download.idle_timeout
    assert chat.pulled < 1000


# ------------------------------------------------------------------------------------ finding 5


class FailsOnBoom(Lines):
    def on_line(self, line: bytes) -> None:
        if line == b"boom":
            raise BoomError("boom")
        self.push(b"ok " + line + b"\n")


class AsyncFailsOnBoom(FailsOnBoom):
    async def found_terminator(self) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        super().found_terminator()


@pytest.mark.parametrize("handler", [FailsOnBoom, AsyncFailsOnBoom], ids=["sync", "async"])
async def test_finding_5_replies_pushed_before_a_hook_raised_are_sent(
    handler: type[FailsOnBoom],
) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(BoomError, match="boom"):
                    await handler(server).run()

            nursery.start_soon(serve)
            await client.send_all(b"one\nboom\n")  # one read
            assert await read_all(client) == b"ok one\n"
            await client.send_eof()  # (the handler may wait for it before it closes)


# ------------------------------------------------------------------------------------ finding 6


class Ends(Lines):
    """Records each connection_lost() call, and whether the stream was closed by then."""

    def __init__(self, stream: RecordingStream) -> None:
        super().__init__(stream)
        self.wire = stream
        self.lost: list[tuple[BaseException | None, bool]] = []

    def on_line(self, line: bytes) -> None:
        if line == b"QUIT":
            self.push(b"bye\n")
            self.close_when_done()
        elif line == b"CLOSE":
            self.close()
        elif line == b"BOOM":
            raise BoomError("boom")
        else:
            self.push(line + b"\n")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append((exc, self.wire.closed))


WAYS = {
    # way: (what connection_lost() gets: None or the exception's type)
    "peer EOF": None,
    "close_when_done": None,
    "hook error": BoomError,
    "close()": None,
    "idle timeout": trio.TooSlowError,
    "slow reader": trio.TooSlowError,
    "cancelled": trio.Cancelled,
    "cancelled, send loop started": trio.Cancelled,
}


@pytest.mark.parametrize("way", WAYS)
async def test_finding_6_connection_lost_is_called_once_however_the_connection_ends(
    autojump_clock: trio.testing.MockClock, way: str
) -> None:
    if way == "slow reader":
        client, server = stalled_pair()
    else:
        client, server = trio.testing.memory_stream_pair()
    chat = Ends(RecordingStream(server))
    chat.idle_timeout = 5.0
    chat.max_queued_bytes = 1000
    error: BaseException | None = None
    with trio.fail_after(TIMEOUT * 10):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def runner() -> None:
                nonlocal error
                with scope:
                    try:
                        await chat.run()
                    except BoomError as exc:
                        error = exc

            nursery.start_soon(runner)
            await trio.testing.wait_all_tasks_blocked()
            if way == "peer EOF":
                await client.send_eof()
            elif way == "close_when_done":
                await client.send_all(b"QUIT\n")
            elif way == "hook error":
                await client.send_all(b"BOOM\n")
            elif way == "close()":
                await client.send_all(b"CLOSE\n")
            elif way == "idle timeout":
                pass  # the client says nothing
            elif way == "slow reader":
                for _ in range(10):  # a chat room broadcasting to a member that reads nothing
                    if chat.closed:
                        break
                    chat.push(b"m" * 299 + b"\n")
                    await trio.lowlevel.checkpoint()
            else:
                if way == "cancelled, send loop started":
                    chat.push(b"from another task\n")  # the send loop starts and writes it
                    await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
    assert scope.cancelled_caught == way.startswith("cancelled")
    assert len(chat.lost) == 1, chat.lost
    exc, stream_was_closed = chat.lost[0]
    assert stream_was_closed
    expected = WAYS[way]
    if expected is None:
        assert exc is None
    else:
        assert isinstance(exc, expected)
    if way == "hook error":
        assert exc is error


# ------------------------------------------------------------------------------------ finding 7

MIB_REPLY = b"v" * (1 << 20)


class BigReplies(Lines):
    """Answers every line with the same 1 MiB; records the queue's peak from inside the hook."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.peak = 0
        self.frames = 0

    def on_line(self, line: bytes) -> None:
        self.frames += 1
        self.push(MIB_REPLY)
        self.peak = max(self.peak, self.queued_bytes)


async def test_finding_7_backpressure_is_checked_after_every_reply() -> None:
    client, server = stalled_pair()
    chat = BigReplies(server)
    requests = 256
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"GET key\n" * requests)  # pipelined, in one read
            await trio.testing.wait_all_tasks_blocked()
            assert chat.frames < requests  # the client reads nothing: the handler waits
            got = 0
            while got < requests * len(MIB_REPLY):
                got += len(await client.receive_some())
            await client.send_eof()
    assert chat.frames == requests
    assert chat.peak <= chat.out_high_water + len(MIB_REPLY)


# ------------------------------------------------------------------------------------ finding 8

# The private names AsyncChat used when issue 10 was filed; asynchat subclasses use such names
# (smtpd, for one, sets attributes freely).
PRIVATE_NAMES = [
    "_buffer",
    "_out",
    "_queued",
    "_drained",
    "_generation",
    "_closing",
    "_closed",
    "_running",
    "_scope",
    "_nursery",
    "_error",
    "_receive_task",
    "_graceful",
    "_send_idle",
    "_deferred",
    "_sender",
    "_flushed",
    "_stream",
]


class OwnNames(Lines):
    def __init__(self) -> None:
        super().__init__()
        self.mine = {name: object() for name in PRIVATE_NAMES}
        for name, value in self.mine.items():
            setattr(self, name, value)


async def test_finding_8_subclass_attributes_do_not_collide_with_the_base_class() -> None:
    with trio.fail_after(TIMEOUT):
        chat = OwnNames()
        assert await exchange(chat, [b"hel", b"lo\nworld\n"]) == b"hello\nworld\n"
    assert {name: getattr(chat, name) for name in PRIVATE_NAMES} == chat.mine


class SetsPeer(trio_chat.async_chat):
    """asynchat code sets ``self.peer`` (smtpd: ``self.peer = conn.getpeername()``)."""

    peer: Any

    def __init__(self) -> None:
        super().__init__()
        self.peer = ("192.0.2.1", 25)
        self.set_terminator(b"\n")
        self.line = b""

    def collect_incoming_data(self, data: bytes) -> None:
        self.line += data

    def found_terminator(self) -> None:
        line, self.line = self.line, b""
        self.push(line + b"\n")


async def test_finding_8_async_chat_subclass_may_set_peer() -> None:
    with trio.fail_after(TIMEOUT):
        chat = SetsPeer()
        assert await exchange(chat, b"hi\n") == b"hi\n"
    assert chat.peer == ("192.0.2.1", 25)


class CountsPushes(Lines):
    def __init__(self) -> None:
        super().__init__()
        self.pushes: list[bytes] = []

    def push(self, data: bytes | bytearray | memoryview) -> None:
        self.pushes.append(bytes(data))
        super().push(data)

    def on_line(self, line: bytes) -> None:
        self.push_with_producer(line + b"\n")


async def test_finding_8_push_with_producer_of_bytes_does_not_call_push() -> None:
    with trio.fail_after(TIMEOUT):
        chat = CountsPushes()
        assert await exchange(chat, b"one\ntwo\n") == b"one\ntwo\n"
    assert chat.pushes == []


@pytest.mark.parametrize("base", [AsyncChat, trio_chat.async_chat], ids=["AsyncChat", "async_chat"])
async def test_finding_8_a_large_push_is_written_in_pieces_of_ac_out_buffer_size(
    base: type[AsyncChat],
) -> None:
    class Pusher(base):  # type: ignore[valid-type,misc]
        ac_out_buffer_size = 1000

        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            pass

    data = bytes(range(256)) * 40  # 10,240 bytes
    client, server = trio.testing.memory_stream_pair()
    wire = RecordingStream(server)
    chat = Pusher()
    chat.push(data)
    chat.close_when_done()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run, wire)
            assert await read_all(client) == data
            await client.send_eof()
    assert wire.sent
    assert max(map(len, wire.sent)) <= 1000


async def test_finding_8_async_chat_has_no_frame_limit() -> None:
    assert trio_chat.async_chat.max_frame_size is None

    class Echo(trio_chat.async_chat):
        def __init__(self) -> None:
            super().__init__()
            self.set_terminator(b"\r\n")
            self.line = b""

        def collect_incoming_data(self, data: bytes) -> None:
            self.line += data

        def found_terminator(self) -> None:
            line, self.line = self.line, b""
            self.push(b"%d\r\n" % len(line))

    with trio.fail_after(TIMEOUT):
        assert await exchange(Echo(), b"x" * (1 << 20) + b"\r\n") == b"1048576\r\n"

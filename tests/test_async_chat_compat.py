"""``async_chat``: asynchat's defaults and behaviours on :class:`~trio_chat.AsyncChat`.

One test (or parametrized group) per behaviour of ``trio_chat/_async_chat.py``; the checks of
CPython's ``Lib/test/test_asynchat.py`` run on ``async_chat`` at the end, over TCP. CPython's
smtpd running on it is ``tests/test_smtpd.py``.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_chat
from trio_chat import (
    DEFAULT_MAX_FRAME_SIZE,
    AsyncChat,
    FrameTooLongError,
    async_chat,
    find_prefix_at_end,
    simple_producer,
)
from trio_chat.testing import exchange

HOST = "127.0.0.1"
TIMEOUT = 10  # seconds (virtual ones under autojump_clock), for a whole test


class BoomError(Exception):
    pass


class Lines(async_chat):
    """asynchat style: a line at a time into ``lines``; ``on_line`` answers."""

    def __init__(self, sock: object = None) -> None:
        async_chat.__init__(self, sock)
        self.set_terminator(b"\n")
        self.buffer = b""  # asynchat examples' name; nothing in the base uses it
        self.lines: list[bytes] = []
        self.closes = 0

    def collect_incoming_data(self, data: bytes) -> None:
        self.buffer += data

    def found_terminator(self) -> None:
        line, self.buffer = self.buffer, b""
        self.lines.append(line)
        self.on_line(line)

    def on_line(self, line: bytes) -> None:
        self.push(line + b"\n")

    def handle_close(self) -> None:
        self.closes += 1
        self.close()


# ------------------------------------------------------------------------------------ defaults

# The class attributes whose defaults differ, and the table in docs/migration.rst that says why.
DIFFERENT_DEFAULTS = {"max_frame_size": None, "max_queued_bytes": None}
LIMITS = [
    "ac_in_buffer_size",
    "ac_out_buffer_size",
    "max_frame_size",
    "out_high_water",
    "max_queued_bytes",
    "idle_timeout",
    "frame_timeout",
]


def test_defaults_differ_only_where_the_migration_guide_says() -> None:
    differ = {
        name: getattr(async_chat, name)
        for name in LIMITS
        if hasattr(AsyncChat, name) and getattr(async_chat, name) != getattr(AsyncChat, name)
    }
    assert differ == DIFFERENT_DEFAULTS
    assert AsyncChat.max_frame_size == DEFAULT_MAX_FRAME_SIZE  # the safe defaults stay there
    assert AsyncChat.max_queued_bytes is not None
    guide = (Path(__file__).parent.parent / "docs" / "migration.rst").read_text()
    for name in DIFFERENT_DEFAULTS:
        assert re.search(rf"``{name}``\s+- ``None``", guide), f"{name} missing from the table"


async def test_no_frame_limit() -> None:
    line = b"x" * (1 << 20)
    with trio.fail_after(TIMEOUT):
        assert await exchange(Lines(), line + b"\n") == line + b"\n"

    class Strict(AsyncChat):
        def __init__(self) -> None:
            super().__init__()
            self.set_terminator(b"\n")

        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            pass

    with trio.fail_after(TIMEOUT), pytest.raises(FrameTooLongError):
        await exchange(Strict(), line + b"\n")


async def test_no_cut_off_for_pushes_from_other_tasks() -> None:
    """A broadcast of 5 MiB to a peer that has not read yet stays queued (asynchat's way)."""
    chat = Lines()
    payload = b"m" * (1 << 16)
    client, server = trio.testing.lockstep_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run, server)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(80):  # more than AsyncChat's max_queued_bytes (4 MiB)
                chat.push(payload)
            await trio.testing.wait_all_tasks_blocked()
            assert not chat.closed
            received = 0
            while received < 80 * len(payload):
                received += len(await client.receive_some())
            await client.aclose()
    assert received == 80 * len(payload)


# ------------------------------------------------------------------------------------ constructor


async def test_constructor_takes_no_arguments_or_sock_and_map() -> None:
    assert async_chat().stream is None
    assert async_chat(None, {}).stream is None  # the map is ignored
    _, server = trio.testing.memory_stream_pair()
    assert async_chat(server).stream is server
    assert async_chat(sock=server, map={}).stream is server
    with pytest.raises(TypeError, match=r"takes a trio stream, a trio socket or .* not 'str'"):
        async_chat("127.0.0.1")
    # asynchat's TestNotConnected: a negative count is refused without a connection.
    with pytest.raises(ValueError, match="must be >= 0"):
        async_chat().set_terminator(-1)


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(client, server) over 127.0.0.1."""
    [listener] = await trio.open_tcp_listeners(0, host=HOST)
    async with listener:
        client = await trio.open_tcp_stream(HOST, listener.socket.getsockname()[1])
        server = await listener.accept()
    return client, server


@pytest.mark.parametrize("kind", ["trio stream", "trio socket", "socket.socket"])
async def test_sock_may_be_a_socket_and_addr_is_the_peer(kind: str) -> None:
    client, server = await tcp_pair()
    sock: object = server
    if kind == "trio socket":
        sock = server.socket
    elif kind == "socket.socket":
        sock = socket.socket(fileno=server.socket.detach())
    chat = Lines(sock)
    assert isinstance(chat.stream, trio.SocketStream)
    assert chat.addr == client.socket.getsockname()
    with trio.fail_after(TIMEOUT):
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(chat.run)
            await client.send_all(b"hello\n")
            assert await client.receive_some() == b"hello\n"
            await client.send_eof()
            assert await client.receive_some() == b""
    assert chat.lines == [b"hello"]


async def test_addr_is_set_when_run_starts() -> None:
    client, server = await tcp_pair()
    seen: list[object] = []

    class Greets(Lines):
        def handle_connect(self) -> None:
            seen.append(self.addr)

    chat = Greets()
    assert chat.addr is None
    client_address = client.socket.getsockname()
    with trio.fail_after(TIMEOUT):
        async with client:
            await client.send_eof()
            await chat.run(server)
    assert seen == [client_address]


async def test_addr_set_by_the_subclass_is_kept() -> None:
    client, server = await tcp_pair()

    class Own(Lines):
        def __init__(self, sock: object) -> None:
            super().__init__(sock)
            self.addr = "mine"

    chat = Own(server)
    with trio.fail_after(TIMEOUT):
        async with client:
            await client.send_eof()
            await chat.run()
    assert chat.addr == "mine"


async def test_addr_is_none_without_a_socket() -> None:
    chat = Lines()
    with trio.fail_after(TIMEOUT):
        await exchange(chat, b"")
    assert chat.addr is None


# ------------------------------------------------------------------------------------ names


class SetsAsyncoreNames(Lines):
    """asyncore/asynchat code assigns these freely (smtpd: ``self.peer = conn.getpeername()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.peer = ("192.0.2.1", 25)
        self.addr = ("192.0.2.1", 25)
        self.socket = "a socket"
        self.connected = True
        self.stream_name = "mine"

    def on_line(self, line: bytes) -> None:
        self.push(repr(self.peer).encode() + b"\n")


async def test_subclasses_set_peer_addr_socket_connected(caplog: pytest.LogCaptureFixture) -> None:
    chat = SetsAsyncoreNames()
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, "trio_chat"):
        assert await exchange(chat, b"hi\n") == b"('192.0.2.1', 25)\n"
    assert (chat.peer, chat.addr, chat.socket, chat.connected) == (
        ("192.0.2.1", 25),
        ("192.0.2.1", 25),
        "a socket",
        True,
    )


def test_peer_is_the_log_name_until_assigned() -> None:
    chat = Lines(trio.testing.memory_stream_pair()[1])
    assert chat.peer == "?"  # AsyncChat's log name for a stream without an address
    chat.peer = ("192.0.2.1", 25)
    assert chat.peer == ("192.0.2.1", 25)
    with pytest.raises(AttributeError):
        AsyncChat().peer = "x"  # type: ignore[misc]  # AsyncChat's stays read-only


PRIVATE_NAMES = ["_buffer", "_out", "_closed", "_closing", "_stream", "_running", "_scope"]


class SetsUnderscoreNames(Lines):
    def __init__(self) -> None:
        super().__init__()
        self.mine = {name: object() for name in PRIVATE_NAMES}
        for name, value in self.mine.items():
            setattr(self, name, value)


async def test_subclasses_set_underscore_names() -> None:
    chat = SetsUnderscoreNames()
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, [b"hel", b"lo\n"]) == b"hello\n"
    assert {name: getattr(chat, name) for name in PRIVATE_NAMES} == chat.mine


async def test_terminator_attribute_reads_and_sets_the_terminator() -> None:
    seen: list[object] = []

    class Counted(Lines):
        def found_terminator(self) -> None:
            seen.append(self.terminator)
            if self.terminator == 0:  # the count is used up, as asynchat reports it
                self.terminator = b"\n"
            super().found_terminator()

        def on_line(self, line: bytes) -> None:
            if line == b"COUNT":
                self.terminator = 5  # asynchat code assigns it
            self.push(line + b"\n")

    chat = Counted()
    assert chat.terminator == b"\n"
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, [b"COUNT\n12", b"345ok\n"]) == b"COUNT\n12345\nok\n"
    assert seen == [b"\n", 0, b"\n"]


def test_use_encoding_encodes_a_str_terminator() -> None:
    class Encoded(Lines):
        use_encoding = True

    chat = Encoded()
    chat.set_terminator("\r\n")
    assert chat.get_terminator() == b"\r\n"
    chat.terminator = "é"
    assert chat.terminator == "é".encode("latin-1")
    with pytest.raises(TypeError, match="encode it"):
        Lines().set_terminator("\r\n")


# ------------------------------------------------------------------------------------ handle_close


class Scripted(Lines):
    """Each line is a command: QUIT (push, close_when_done), CLOSE (close()), BOOM (raise)."""

    def __init__(self, sock: object = None) -> None:
        super().__init__(sock)
        self.events: list[str] = []

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

    def handle_close(self) -> None:
        self.events.append("handle_close")
        super().handle_close()


async def test_handle_close_on_eof_once() -> None:
    chat = Scripted()
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, b"one\n") == b"one\n"
    assert chat.events == ["handle_close"]
    assert chat.closes == 1


async def test_handle_close_on_eof_once_with_the_default_handle_close() -> None:
    """The default (close_when_done()) ends the connection normally: still one call."""

    class Default(Scripted):
        def handle_close(self) -> None:
            self.events.append("handle_close")
            async_chat.handle_close(self)

    chat = Default()
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, b"one\n") == b"one\n"
    assert chat.events == ["handle_close"]


async def test_handle_close_after_close_when_done() -> None:
    chat = Scripted()
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, b"one\nQUIT\nignored\n") == b"one\nbye\n"
    assert chat.events == ["handle_close"]


async def test_handle_close_after_a_hook_raised() -> None:
    chat = Scripted()
    with trio.fail_after(TIMEOUT), pytest.raises(BoomError):
        await exchange(chat, b"BOOM\n")
    assert chat.events == ["handle_close"]


async def test_no_handle_close_after_close() -> None:
    chat = Scripted()
    with trio.fail_after(TIMEOUT):
        assert await exchange(chat, [b"one\n", b"CLOSE\n"]) == b"one\n"
    assert chat.events == []


async def test_close_drops_what_was_pushed_before_it_in_the_same_read() -> None:
    """A difference the migration guide states: asynchat's push() wrote at once, so a reply
    pushed before close() had usually gone out; here pushes are written after the hooks of a
    read ran, and close() drops them: use close_when_done()."""
    with trio.fail_after(TIMEOUT):
        assert await exchange(Scripted(), b"one\nCLOSE\n") == b""
        assert await exchange(Scripted(), b"one\nQUIT\n") == b"one\nbye\n"


async def test_handle_close_after_a_reset_while_writing() -> None:
    chat = Scripted()
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"one\n")
    await client.aclose()  # gone before the reply: writing it fails
    with trio.fail_after(TIMEOUT):
        await chat.run(server)
    assert chat.lines == [b"one"]
    assert chat.events == ["handle_close"]


async def test_handle_close_after_an_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    chat = Scripted()
    chat.idle_timeout = 5
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        await chat.run(server)
    assert chat.events == ["handle_close"]
    await client.aclose()


async def test_handle_close_when_run_is_cancelled() -> None:
    chat = Scripted()
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.05):
            await chat.run(server)
        await client.aclose()
    assert chat.events == ["handle_close"]


async def test_an_async_handle_close_is_awaited() -> None:
    done: list[str] = []

    class AsyncClose(Scripted):
        async def handle_close(self) -> None:  # type: ignore[override]
            await trio.lowlevel.checkpoint()
            done.append("handle_close")

    with trio.fail_after(TIMEOUT):
        assert await exchange(AsyncClose(), b"QUIT\n") == b"bye\n"
    assert done == ["handle_close"]


def test_handle_close_overrides_are_tracked_once() -> None:
    """Every subclass's own handle_close is wrapped (so connection_lost() knows it ran), once."""

    class Deeper(Scripted):
        def handle_close(self) -> None:
            super().handle_close()

    for cls in (Scripted, Deeper):
        assert cls.handle_close.__wrapped__ is not None  # type: ignore[attr-defined]
        assert not hasattr(cls.handle_close.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]
    chat = Deeper()
    chat.handle_close()
    assert chat.events == ["handle_close"]
    assert chat.connection_lost(None) is None  # already ran: not again


# ------------------------------------------------------------------------------------ pushes


async def test_push_after_close_is_dropped_as_in_asynchat() -> None:
    class PushesLate(Scripted):
        def on_line(self, line: bytes) -> None:
            super().on_line(line)
            self.push(b"late\n")  # after close_when_done(): dropped, no error
            self.push_with_producer(simple_producer(b"later\n"))

    with trio.fail_after(TIMEOUT):
        assert await exchange(PushesLate(), b"QUIT\n") == b"bye\n"
    chat = Scripted()
    chat.close()
    chat.push(b"dropped")
    with pytest.raises(TypeError, match="str"):
        chat.push("still a type error")  # type: ignore[arg-type]


class RecordingStream(trio.abc.HalfCloseableStream):
    """Passes everything through to *inner*, recording each send_all."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_large_push_is_written_in_pieces_of_ac_out_buffer_size() -> None:
    chat = Lines()
    chat.ac_out_buffer_size = 1000
    data = bytes(range(256)) * 40
    client, server = trio.testing.memory_stream_pair()
    wire = RecordingStream(server)
    chat.push(data)
    chat.close_when_done()
    received = b""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat.run, wire)
            while chunk := await client.receive_some():
                received += chunk
            await client.aclose()  # the peer's EOF ends the lingering close at once
    assert received == data
    assert max(map(len, wire.sent)) == 1000


async def test_push_with_producer_of_bytes_does_not_call_push() -> None:
    """smtpd-style: the subclass's push() takes str; asynchat queued bytes producers as is."""

    class StrPush(Lines):
        def push(self, data: Any) -> None:
            async_chat.push(self, data.encode("ascii") + b"\r\n")

        def on_line(self, line: bytes) -> None:
            self.push_with_producer(line + b"!\n")

    with trio.fail_after(TIMEOUT):
        assert await exchange(StrPush(), b"hi\n") == b"hi!\n"


# ------------------------------------------------------------------------------------ test_asynchat

# CPython's Lib/test/test_asynchat.py checks, on async_chat over TCP against an echo peer like
# its echo_server: it reads until b"QUIT\n", then echoes what came before in chunks, then closes.
SERVER_QUIT = b"QUIT\n"


async def echo_peer(listener: trio.SocketListener, chunk_size: int, got: list[bytes]) -> None:
    async with listener, await listener.accept() as stream:
        data = b""
        while SERVER_QUIT not in data:
            chunk = await stream.receive_some(1)
            if not chunk:
                break
            data += chunk
        got.append(data)
        data = data.replace(SERVER_QUIT, b"")
        try:
            for start in range(0, len(data), chunk_size):
                await stream.send_all(data[start : start + chunk_size])
        except trio.BrokenResourceError:
            pass  # the client has gone


class EchoClient(async_chat):
    """asynchat style: connects with a plain socket, collects frames into contents."""

    def __init__(self, terminator: bytes | int | None, sock: object) -> None:
        async_chat.__init__(self, sock)
        self.contents: list[bytes] = []
        self.set_terminator(terminator)
        self.buffer = b""

    def handle_connect(self) -> None:
        pass

    def collect_incoming_data(self, data: bytes) -> None:
        self.buffer += data

    def found_terminator(self) -> None:
        self.contents.append(self.buffer)
        self.buffer = b""


async def echo_session(
    terminator: bytes | int | None,
    pushes: list[Any],
    chunk_size: int = 1,
    close_when_done: bool = False,
) -> tuple[EchoClient, bytes]:
    """Run an EchoClient through *pushes* against the echo peer; returns it and what the peer
    received."""
    [listener] = await trio.open_tcp_listeners(0, host=HOST)
    port = listener.socket.getsockname()[1]
    got: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_peer, listener, chunk_size, got)
            sock = await trio.to_thread.run_sync(socket.create_connection, (HOST, port))
            client = EchoClient(terminator, sock)
            for item in pushes:
                if isinstance(item, simple_producer):
                    client.push_with_producer(item)
                else:
                    client.push(item)
            if close_when_done:
                client.close_when_done()
            await client.run()
    return client, got[0]


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"qqq"])
async def test_asynchat_line_terminator(terminator: bytes, chunk_size: int) -> None:
    pushes = [b"hello ", b"world" + terminator, b"I'm not dead yet!" + terminator, SERVER_QUIT]
    client, _ = await echo_session(terminator, pushes, chunk_size)
    assert client.contents == [b"hello world", b"I'm not dead yet!"]


@pytest.mark.parametrize("length", [1, 10, 28])
async def test_asynchat_numeric_terminator(length: int) -> None:
    data = b"hello world, I'm not dead yet!\n"
    client, _ = await echo_session(length, [data, SERVER_QUIT])
    assert client.contents == [data[:length]]


async def test_asynchat_none_terminator() -> None:
    data = b"hello world, I'm not dead yet!\n"
    client, _ = await echo_session(None, [data, SERVER_QUIT])
    assert client.contents == []
    assert client.buffer == data


async def test_asynchat_simple_producer() -> None:
    data = b"hello world\nI'm not dead yet!\n"
    client, _ = await echo_session(b"\n", [simple_producer(data + SERVER_QUIT, buffer_size=8)])
    assert client.contents == [b"hello world", b"I'm not dead yet!"]


async def test_asynchat_string_producer() -> None:
    data = b"hello world\nI'm not dead yet!\n"
    [listener] = await trio.open_tcp_listeners(0, host=HOST)
    got: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_peer, listener, 1, got)
            stream = await trio.open_tcp_stream(HOST, listener.socket.getsockname()[1])
            client = EchoClient(b"\n", stream)  # a trio stream is as good as a socket
            client.push_with_producer(data + SERVER_QUIT)
            await client.run()
    assert client.contents == [b"hello world", b"I'm not dead yet!"]


async def test_asynchat_empty_line() -> None:
    client, _ = await echo_session(b"\n", [b"hello world\n\nI'm not dead yet!\n", SERVER_QUIT])
    assert client.contents == [b"hello world", b"", b"I'm not dead yet!"]


async def test_asynchat_close_when_done() -> None:
    client, got = await echo_session(
        b"\n", [b"hello world\nI'm not dead yet!\n", SERVER_QUIT], close_when_done=True
    )
    assert client.contents == []
    assert got == b"hello world\nI'm not dead yet!\n" + SERVER_QUIT


async def test_asynchat_push() -> None:
    data = b"bytes\n"
    pushes = [data, bytearray(data), memoryview(data), SERVER_QUIT]
    client, _ = await echo_session(b"\n", pushes)
    assert client.contents == [b"bytes", b"bytes", b"bytes"]
    with pytest.raises(TypeError):
        client.push(10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.push("unicode")  # type: ignore[arg-type]


def test_asynchat_find_prefix_at_end() -> None:
    assert find_prefix_at_end(b"qwerty\r", b"\r\n") == 1
    assert find_prefix_at_end(b"qwertydkjf", b"\r\n") == 0


def test_async_chat_is_public_and_its_own_class() -> None:
    assert trio_chat.async_chat is async_chat
    assert async_chat is not AsyncChat
    assert issubclass(async_chat, AsyncChat)
    assert async_chat.__module__ == "trio_chat"
    assert "async_chat" in trio_chat.__all__

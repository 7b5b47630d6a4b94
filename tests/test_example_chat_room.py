"""trio_chat/demos/chat_room.py: joining, talking, renaming, leaving, limits and shutdown."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from server_process import ServerProcess
from serving_helpers import HOST, LineReader, connect

from trio_chat.demos import chat_room

EXAMPLE = Path(__file__).parent.parent / "trio_chat" / "demos" / "chat_room.py"
TIMEOUT = 10  # seconds (virtual ones under autojump_clock), for a whole test


class Person:
    """A chat client: a socket stream and a line reader."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = LineReader(stream)

    async def say(self, text: str) -> None:
        await self.stream.send_all(text.encode() + b"\n")

    async def hear(self) -> str:
        line = await self.reader.line()
        assert line.endswith(b"\n"), f"connection closed after {line!r}"
        return line[:-1].decode()

    async def hear_eof(self) -> None:
        assert await self.reader.rest() == b""


class Visitors:
    """The clients of one room in a test; :meth:`aclose` closes them all."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.people: list[Person] = []

    async def arrive(self, stream: trio.SocketStream | None = None) -> Person:
        person = Person(stream if stream is not None else await connect(self.port))
        self.people.append(person)
        assert await person.hear() == "Welcome! Your nick?"
        return person

    async def join(self, nick: str, here: str = "") -> Person:
        person = await self.arrive()
        await person.say(nick)
        assert await person.hear() == f"* hello {nick}; here: {here}"
        return person

    async def aclose(self) -> None:
        for person in self.people:
            await person.stream.aclose()


@asynccontextmanager
async def chat_room_server(shutdown: trio.Event | None = None) -> AsyncIterator[Visitors]:
    """Serve a room on 127.0.0.1 for the body; then close the clients and, unless a shutdown
    event was given (the test shuts down), cancel the server."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(
            partial(
                chat_room.serve_room,
                listeners,
                shutdown=shutdown if shutdown is not None else trio.Event(),
            )
        )
        assert started == listeners
        visitors = Visitors(listeners[0].socket.getsockname()[1])
        try:
            yield visitors
        finally:
            await visitors.aclose()
            if shutdown is None:
                nursery.cancel_scope.cancel()


async def test_join_talk_rename_who_quit() -> None:
    with trio.fail_after(TIMEOUT):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            bob = await room.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            await alice.say("hi all")
            assert await bob.hear() == "<alice> hi all"
            await bob.say("/nick robert")
            assert await bob.hear() == "* bob is now known as robert"
            assert await alice.hear() == "* bob is now known as robert"
            await alice.say("/who")  # also shows that alice did not hear her own "hi all"
            assert await alice.hear() == "* here: alice, robert"
            await alice.say("/help")
            assert await alice.hear() == "* commands: /nick NEW, /who, /quit"
            await alice.say("/quit")
            assert await alice.hear() == "Bye!"
            await alice.hear_eof()
            assert await bob.hear() == "* alice left"
            await bob.say("")  # an empty line is a keepalive: nothing happens
            await bob.say("/who")
            assert await bob.hear() == "* here: robert"


async def test_nick_rules() -> None:
    with trio.fail_after(TIMEOUT):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            newcomer = await room.arrive()
            rule = f"* a nick is 1 to {chat_room.MAX_NICK} printable characters without spaces"
            for bad in ("two words", "x" * (chat_room.MAX_NICK + 1), "bell\x07"):
                await newcomer.say(bad)
                assert await newcomer.hear() == rule
            await newcomer.say("alice")
            assert await newcomer.hear() == "* alice is taken, try another"
            await newcomer.say("carol\r")  # a CRLF client
            assert await newcomer.hear() == "* hello carol; here: alice"
            assert await alice.hear() == "* carol joined"
            await newcomer.say("/nick alice")
            assert await newcomer.hear() == "* alice is taken, try another"


async def test_a_reader_that_stops_reading_is_cut_off_and_the_room_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = 20_000  # 20 MB: more than the kernel buffers plus MAX_QUEUED_BYTES ever hold
    text = "x" * 1000
    with trio.fail_after(60):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            bob = await room.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            # carol joins, then never reads again; a small receive buffer makes the kernel
            # hold less for her, so the room's limit is reached sooner.
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect((HOST, room.port))
            carol = await room.arrive(trio.SocketStream(sock))
            await carol.say("carol")
            assert await carol.hear() == "* hello carol; here: alice, bob"
            assert await alice.hear() == "* carol joined"
            assert await bob.hear() == "* carol joined"

            async def talk() -> None:
                for number in range(lines):
                    await alice.say(f"{number} {text}")
                    if number % 100 == 0:  # the room carries on at the pace of its readers
                        await trio.lowlevel.checkpoint()

            cut_off_after = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk)
                for number in range(lines):  # bob hears every line, in order, carol or not
                    heard = await bob.hear()
                    if heard == "* carol left (cut off: reads too slowly)":
                        cut_off_after = number
                        heard = await bob.hear()
                    assert heard == f"<alice> {number} {text}"
            assert cut_off_after is not None
    assert f"max_queued_bytes={chat_room.MAX_QUEUED_BYTES}" in caplog.text


async def test_a_line_too_long_disconnects_its_sender_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            mallory = await room.join("mallory", here="alice")
            assert await alice.hear() == "* mallory joined"
            await mallory.stream.send_all(b"A" * (chat_room.MAX_LINE + 1))
            await mallory.hear_eof()
            assert await alice.hear() == "* mallory left"
            await alice.say("/who")
            assert await alice.hear() == "* here: alice"


async def test_idle_members_are_disconnected_and_keepalives_prevent_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10 * chat_room.IDLE_TIMEOUT):
        async with chat_room_server() as room:
            keen = await room.join("keen")
            quiet = await room.join("quiet", here="keen")
            assert await keen.hear() == "* quiet joined"
            for _ in range(2):  # empty lines keep keen's connection alive...
                await trio.sleep(chat_room.IDLE_TIMEOUT * 0.9)
                await keen.say("")
            assert await keen.hear() == "* quiet left"  # ...while quiet's timed out
            await quiet.hear_eof()
            await keen.say("/who")
            assert await keen.hear() == "* here: keen"


async def test_graceful_shutdown_says_goodbye_to_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shutdown = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with chat_room_server(shutdown) as room:
            alice = await room.join("alice")
            bob = await room.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            nickless = await room.arrive()
            requested = trio.current_time()
            shutdown.set()
            for person in (alice, bob):
                assert await person.hear() == "* the server is shutting down"
                await person.hear_eof()
            await nickless.hear_eof()
        # serve_room returned by itself, at once: nobody waited for the grace period.
        assert trio.current_time() == requested


async def test_runs_as_a_program() -> None:
    with ServerProcess([str(EXAMPLE), "--port", "0"]) as server:
        port = server.port()
        with (
            socket.create_connection((HOST, port), timeout=TIMEOUT) as alice,
            socket.create_connection((HOST, port), timeout=TIMEOUT) as bob,
        ):
            alice_lines = alice.makefile("rb")
            bob_lines = bob.makefile("rb")
            assert alice_lines.readline() == b"Welcome! Your nick?\n"
            alice.sendall(b"alice\n")
            assert alice_lines.readline() == b"* hello alice; here: \n"
            assert bob_lines.readline() == b"Welcome! Your nick?\n"
            bob.sendall(b"bob\n")
            assert bob_lines.readline() == b"* hello bob; here: alice\n"
            assert alice_lines.readline() == b"* bob joined\n"
            bob.sendall(b"hello from a real process\n")
            assert alice_lines.readline() == b"<bob> hello from a real process\n"
            rest = server.stop()  # SIGINT: the graceful shutdown
            for lines in (alice_lines, bob_lines):
                assert lines.readline() == b"* the server is shutting down\n"
                assert lines.readline() == b""
                lines.close()
    assert server.returncode == 0
    assert "stopped" in rest
    assert "Traceback" not in server.stderr


def test_a_taken_port_is_reported_plainly() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ServerProcess([str(EXAMPLE), "--port", str(port)]) as server:
            assert server.proc is not None
            assert server.proc.wait(TIMEOUT) == 1
    assert f"cannot listen on 127.0.0.1:{port}:" in server.stderr
    assert "Traceback" not in server.stderr

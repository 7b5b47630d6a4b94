"""The tutorial's example programs (examples/tutorial/), and the claims the tutorial makes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import run_server
import step1_echo
import step2_lines
import step3_protocol
import step4_async
import step5_backpressure
import step6_chat
import trio
import trio.testing
from server_process import TIMEOUT, ServerProcess, talk
from serving_helpers import LineReader, reset_on_close
from stream_helpers import read_all

import trio_chat

TUTORIAL = Path(__file__).parent.parent / "examples" / "tutorial"


async def read_until(stream: trio.abc.ReceiveStream, end: bytes) -> bytes:
    out = bytearray()
    while not out.endswith(end):
        data = await stream.receive_some()
        assert data, f"EOF after {bytes(out)!r}"
        out += data
    return bytes(out)


async def conversation(handler: trio_chat.AsyncChat, *pieces: bytes) -> bytes:
    """Send *pieces* as separate reads, then EOF; return everything the handler sent."""
    assert handler.stream is None
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler.run, server)
        for piece in pieces:
            await client.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()
        await client.send_eof()
        return await read_all(client)


def make(factory: trio_chat.HandlerFactory) -> trio_chat.AsyncChat:
    """A handler built without its stream: conversation() gives it one."""
    return factory(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------- step 1


async def test_step1_echoes_bytes_as_they_arrive() -> None:
    with trio.fail_after(5):
        reply = await conversation(make(step1_echo.Echo), b"no terminator ", b"needed\n", b"\x00")
    assert reply == b"no terminator needed\n\x00"


# ------------------------------------------------------------------- step 2


async def test_step2_answers_each_line_however_it_is_split() -> None:
    data = b"hello\r\nwor" + b"ld\nthree\nfour\n"
    with trio.fail_after(10):
        for cut in range(len(data) + 1):
            reply = await conversation(make(step2_lines.Upper), data[:cut], data[cut:])
            assert reply == b"HELLO\nWORLD\nTHREE\nFOUR\n", cut


async def test_step2_an_unfinished_line_is_handed_over_at_eof_but_not_answered() -> None:
    handler = make(step2_lines.Upper)
    assert isinstance(handler, step2_lines.Upper)
    with trio.fail_after(5):
        assert await conversation(handler, b"a\nhalf a line\r") == b"A\n"
    assert handler.pieces == [b"half a line\r"]  # the held-back b"\r" too


async def test_step2_a_line_longer_than_max_frame_size_ends_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Through the server: the error is logged, that connection closed, the server goes on.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_server.serve, step2_lines.Upper, 0)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"x" * (trio_chat.DEFAULT_MAX_FRAME_SIZE + 1))
                assert await read_all(stream) == b""
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"still here\n")
                assert await read_until(stream, b"\n") == b"STILL HERE\n"
            nursery.cancel_scope.cancel()
    assert any("FrameTooLongError" in r.getMessage() for r in caplog.records), caplog.text


# ------------------------------------------------------------------- step 3


async def test_step3_protocol() -> None:
    store: dict[bytes, bytes] = {}
    handler = make(partial(step3_protocol.KeyValue, store=store))
    with trio.fail_after(5):
        reply = await conversation(
            handler,
            b"SET colour blue\r\nGET colour\nget nothing\nKEYS\nSET x\nDANCE\n",
            b"QUIT\nSET after quit\n",
        )
    help_line = b"commands: SET key value, GET key, KEYS, QUIT\r\n"
    assert reply == (
        b"HELLO " + help_line + b"OK\r\nVALUE blue\r\nNOT FOUND\r\nKEYS colour\r\n"
        b"ERROR " + help_line + b"ERROR " + help_line + b"BYE\r\n"
    )
    assert store == {b"colour": b"blue"}  # input after QUIT was not processed


async def test_step3_connections_share_the_store() -> None:
    store: dict[bytes, bytes] = {}
    factory = partial(step3_protocol.KeyValue, store=store)
    with trio.fail_after(5):
        await conversation(make(factory), b"SET k v\n")
        reply = await conversation(make(factory), b"GET k\n")
    assert reply.endswith(b"\r\nVALUE v\r\n")


# ------------------------------------------------------------------- step 4


async def test_step4_a_waiting_hook_holds_back_this_connection_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    slow_client, slow_server = trio.testing.memory_stream_pair()
    fast_client, fast_server = trio.testing.memory_stream_pair()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step4_async.Waiter(slow_server).run)
            nursery.start_soon(step4_async.Waiter(fast_server).run)
            start = trio.current_time()
            await slow_client.send_all(b"SLEEP 10\nCOUNT 2\n")  # COUNT waits for SLEEP
            await fast_client.send_all(b"COUNT 3\n")
            assert await read_until(fast_client, b"3\r\n") == b"1\r\n2\r\n3\r\n"
            assert trio.current_time() == start  # not held up by the sleeping neighbour
            assert await read_until(slow_client, b"2\r\n") == b"AWAKE\r\n1\r\n2\r\n"
            assert trio.current_time() - start == pytest.approx(10)
            for client in slow_client, fast_client:
                await client.send_all(b"QUIT\n")
                assert await read_all(client) == b"BYE\r\n"


async def test_step4_the_producer_runs_only_as_fast_as_the_client_reads() -> None:
    made = 0
    numbers = step4_async.numbers

    def counting(n: int) -> Iterator[bytes]:
        nonlocal made
        for line in numbers(n):
            made += 1
            yield line

    client, server = trio.testing.lockstep_stream_pair()  # no buffering at all
    with trio.fail_after(5), pytest.MonkeyPatch.context() as patch:
        patch.setattr(step4_async, "numbers", counting)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step4_async.Waiter(server).run)
            await client.send_all(b"COUNT 1000000\n")
            assert await client.receive_some(3) == b"1\r\n"
            await trio.testing.wait_all_tasks_blocked()
            assert made <= 3  # not a million lines in memory
            nursery.cancel_scope.cancel()


async def test_step4_a_silent_client_is_disconnected(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step4_async.Waiter(server).run)
            assert await read_all(client) == b""
    assert trio.current_time() == pytest.approx(step4_async.Waiter.idle_timeout)


async def test_step4_errors() -> None:
    with trio.fail_after(5):
        reply = await conversation(make(step4_async.Waiter), b"SLEEP\nCOUNT x\n")
    assert reply == b"ERROR commands: SLEEP seconds, COUNT n, QUIT\r\n" * 2


async def test_step4_clients_that_ask_for_everything_and_never_read_are_cut(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack step 4 invites: COUNT 1000000000 from many clients that never read. Each
    # producer stops when its client's buffers are full; idle_timeout, which bounds every wait on
    # the peer (writes too), then cuts each of them, and a healthy client is served meanwhile.
    caplog.set_level(logging.INFO, logger="trio_chat")
    attackers = 20
    sockets = []
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_server.serve, step4_async.Waiter, 0)
            for _ in range(attackers):
                sock = trio.socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"COUNT 1000000000\r\n")
                sockets.append(sock)
            start = trio.current_time()
            async with await trio.open_tcp_stream("127.0.0.1", port) as healthy:
                await healthy.send_all(b"COUNT 3\r\nQUIT\r\n")
                assert await read_all(healthy) == b"1\r\n2\r\n3\r\nBYE\r\n"
            assert trio.current_time() - start < 1
            await trio.sleep(step4_async.Waiter.idle_timeout + 5)
            cut = [r for r in caplog.records if "idle_timeout" in r.getMessage()]
            assert len(cut) == attackers
            nursery.cancel_scope.cancel()
    for sock in sockets:
        sock.close()


# ------------------------------------------------------------------- step 5


async def test_step5_prints_what_the_tutorial_shows(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(5):
        await step5_backpressure.experiment()
    expected = (TUTORIAL / "step5_backpressure.out").read_text(encoding="utf-8")
    assert capsys.readouterr().out == expected


# ------------------------------------------------------------------- step 6


class Chatter:
    """A client of step 6's room: a stream, and the lines it hears."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = LineReader(stream)

    async def say(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def hear(self) -> bytes:
        line = await self.reader.line()
        assert line.endswith(b"\n"), f"EOF after {line!r}"
        return line[:-1]

    async def join(self, nick: bytes, here: bytes = b"") -> Chatter:
        assert await self.hear() == b"Welcome! Your nick?"
        await self.say(nick + b"\n")
        assert await self.hear() == b"* hello " + nick + b"; here: " + here
        return self


async def chat_server(nursery: trio.Nursery) -> tuple[int, step6_chat.Room]:
    """Serve step 6's room on 127.0.0.1 (port 0) in *nursery*: the port and the room."""
    room = step6_chat.Room()
    port = await nursery.start(run_server.serve, partial(step6_chat.Member, room=room), 0)
    return port, room


async def arrive(port: int) -> Chatter:
    return Chatter(await trio.open_tcp_stream("127.0.0.1", port))


async def test_step6_a_line_goes_to_every_member_but_its_sender() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, room = await chat_server(nursery)
            alice = await (await arrive(port)).join(b"alice")
            bob = await (await arrive(port)).join(b"bob", b"alice")
            assert await alice.hear() == b"* bob joined"
            carol = await (await arrive(port)).join(b"carol", b"alice, bob")
            assert await alice.hear() == b"* carol joined"
            assert await bob.hear() == b"* carol joined"
            assert sorted(room.members) == ["alice", "bob", "carol"]

            await bob.say(b"hi all\r\n\n")  # a trailing \r is dropped, an empty line ignored
            assert await alice.hear() == b"<bob> hi all"
            assert await carol.hear() == b"<bob> hi all"
            await alice.say(b"hi ")
            await alice.say(b"bob\n")
            # Had bob heard his own line, it would come first: it was pushed before this one.
            assert await bob.hear() == b"<alice> hi bob"
            assert await carol.hear() == b"<alice> hi bob"

            taken = await arrive(port)
            assert await taken.hear() == b"Welcome! Your nick?"
            await taken.say(b"alice\n\n")
            assert await taken.hear() == b"* that nick is empty or taken, try another"
            assert await taken.hear() == b"* that nick is empty or taken, try another"
            await taken.say(b"dave\n")
            assert await taken.hear() == b"* hello dave; here: alice, bob, carol"
            for chatter in alice, bob, carol:
                assert await chatter.hear() == b"* dave joined"
            for chatter in alice, bob, carol, taken:
                await chatter.stream.aclose()
            nursery.cancel_scope.cancel()


async def test_step6_quit_leaves_the_room_and_the_others_are_told() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, room = await chat_server(nursery)
            alice = await (await arrive(port)).join(b"alice")
            bob = await (await arrive(port)).join(b"bob", b"alice")
            assert await alice.hear() == b"* bob joined"
            await bob.say(b"/quit\nnot said\n")  # input after /quit is not processed
            assert await bob.hear() == b"Bye!"
            assert await bob.reader.rest() == b""  # then the connection is closed
            assert await alice.hear() == b"* bob left"
            assert list(room.members) == ["alice"]
            await bob.stream.aclose()
            # The nick is free again, and the room goes on.
            bob = await (await arrive(port)).join(b"bob", b"alice")
            assert await alice.hear() == b"* bob joined"
            await alice.say(b"welcome back\n")
            assert await bob.hear() == b"<alice> welcome back"
            for chatter in alice, bob:
                await chatter.stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
async def test_step6_a_client_that_hangs_up_mid_line_leaves_the_room(
    reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chat")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, room = await chat_server(nursery)
            alice = await (await arrive(port)).join(b"alice")
            bob = await (await arrive(port)).join(b"bob", b"alice")
            assert await alice.hear() == b"* bob joined"
            carol = await (await arrive(port)).join(b"carol", b"alice, bob")
            for chatter in alice, bob:
                assert await chatter.hear() == b"* carol joined"
            await bob.say(b"half a li")
            assert isinstance(bob.stream, trio.SocketStream)
            if reset:
                reset_on_close(bob.stream)
            await bob.stream.aclose()
            # The half line is never said: "* bob left" is the next thing the others hear.
            assert await alice.hear() == b"* bob left"
            assert await carol.hear() == b"* bob left"
            assert sorted(room.members) == ["alice", "carol"]
            await carol.say(b"still here?\n")
            assert await alice.hear() == b"<carol> still here?"
            for chatter in alice, carol:
                await chatter.stream.aclose()
            nursery.cancel_scope.cancel()
    assert not caplog.records, caplog.text  # nothing failed, nothing was cut off


def send_loops() -> int:
    """How many AsyncChat send loops are running now, in the whole task tree."""

    def tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from tasks(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return sum(task.name.endswith("AsyncChat._send_loop") for task in tasks(root))


async def test_step6_a_send_loop_starts_when_another_member_pushes() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, _ = await chat_server(nursery)
            alice = await (await arrive(port)).join(b"alice")
            # Alice's replies so far came from her own hooks: her receive loop wrote them.
            assert send_loops() == 0
            bob = await (await arrive(port)).join(b"bob", b"alice")
            # "* bob joined" was pushed to alice from bob's task: her send loop wrote it.
            assert await alice.hear() == b"* bob joined"
            assert send_loops() == 1
            await alice.say(b"hi\n")
            assert await bob.hear() == b"<alice> hi"
            assert send_loops() == 2
            await bob.say(b"hi\n")
            assert await alice.hear() == b"<bob> hi"
            assert send_loops() == 2  # started once, then parked between bursts
            for chatter in alice, bob:
                await chatter.stream.aclose()
            nursery.cancel_scope.cancel()


async def test_step6_a_member_that_does_not_read_is_cut_off_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # In memory: alice's stream has no buffer at all, so what she does not read stays queued in
    # the server (over TCP the kernel's buffers would first take a few megabytes).
    room = step6_chat.Room()
    alice_client, alice_server = trio.testing.lockstep_stream_pair()
    alice_member = step6_chat.Member(alice_server, room)
    alice_member.max_queued_bytes = 8192  # as serve_tcp(max_queued_bytes=8192) would set it
    lines = 64
    line = b"x" * 999 + b"\n"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice_member.run)
            alice = await Chatter(alice_client).join(b"alice")
            chatters = []
            for nick, here in (b"bob", b"alice"), (b"carol", b"alice, bob"):
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(step6_chat.Member(server, room).run)
                chatters.append(await Chatter(client).join(nick, here))
            bob, carol = chatters
            assert await bob.hear() == b"* carol joined"
            # Alice reads nothing from here on. Bob talks on, and carol hears every line: a
            # push() to alice never waits for her.
            await bob.say(line * lines)
            for _ in range(lines):
                assert await carol.hear() == b"<bob> " + line[:-1]
            assert await carol.hear() == b"* alice left"
            assert await bob.hear() == b"* alice left"
            assert alice_member.closed
            assert sorted(room.members) == ["bob", "carol"]
            # Alice gets what was being written when she was cut off, then the end.
            assert (await alice.reader.rest()).count(b"<bob>") < lines
            for chatter in bob, carol:
                await chatter.stream.aclose()
    assert "more than max_queued_bytes=8192 (the peer reads too slowly)" in caplog.text


# --------------------------------------------------------------- what runs where


async def test_cancelling_the_server_closes_every_connection() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_server.serve, step2_lines.Upper, 0)
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
            for client in clients:
                await client.send_all(b"hi\n")
                assert await read_until(client, b"\n") == b"HI\n"
            nursery.cancel_scope.cancel()
        for client in clients:
            assert await read_all(client) == b""  # each server-side stream was closed
            await client.aclose()


async def test_an_exception_in_one_connection_leaves_the_others_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fussy(step2_lines.Upper):
        def found_terminator(self) -> None:
            if b"".join(self.pieces) == b"boom":
                raise RuntimeError("boom")
            super().found_terminator()

    caplog.set_level(logging.ERROR, logger="trio_chat")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_server.serve, Fussy, 0)
            calm = await trio.open_tcp_stream("127.0.0.1", port)
            fussy = await trio.open_tcp_stream("127.0.0.1", port)
            await fussy.send_all(b"boom\n")
            assert await read_all(fussy) == b""
            await calm.send_all(b"fine\n")
            assert await read_until(calm, b"\n") == b"FINE\n"
            await calm.aclose()
            await fussy.aclose()
            # The error is raised (and logged) once the connection has closed politely.
            for _ in range(500):  # bounded: 5 s
                if "RuntimeError: boom" in caplog.text:
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------- the programs


@pytest.mark.parametrize(
    ("step", "request_bytes", "expect"),
    [
        ("step1_echo.py", b"ping\n", b"ping\n"),
        ("step2_lines.py", b"ping\n", b"PING\n"),
        ("step3_protocol.py", b"SET a b\nGET a\n", b"VALUE b\r\n"),
        ("step4_async.py", b"COUNT 2\n", b"2\r\n"),
    ],
)
def test_each_step_runs_as_a_program(step: str, request_bytes: bytes, expect: bytes) -> None:
    with ServerProcess([str(TUTORIAL / step), "--port", "0"]) as server:
        port = server.port()
        assert talk(port, request_bytes, until_eof=False, expect=expect).endswith(expect)
        out = server.stop()
    assert server.returncode == 0, server.stderr
    assert out == ""


def test_step6_runs_as_a_program() -> None:
    # Two clients of one server process: they share the room that __main__ created once.
    with ServerProcess([str(TUTORIAL / "step6_chat.py"), "--port", "0"]) as server:
        port = server.port()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as alice,
            alice.makefile("rb") as alice_lines,
        ):
            assert alice_lines.readline() == b"Welcome! Your nick?\n"
            alice.sendall(b"alice\n")
            assert alice_lines.readline() == b"* hello alice; here: \n"
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as bob,
                bob.makefile("rb") as bob_lines,
            ):
                assert bob_lines.readline() == b"Welcome! Your nick?\n"
                bob.sendall(b"bob\n")
                assert bob_lines.readline() == b"* hello bob; here: alice\n"
                assert alice_lines.readline() == b"* bob joined\n"
                bob.sendall(b"hello\n/quit\n")
                assert alice_lines.readline() == b"<bob> hello\n"
                assert bob_lines.read() == b"Bye!\n"  # then EOF
                assert alice_lines.readline() == b"* bob left\n"
            out = server.stop()  # with alice still connected
    assert server.returncode == 0, server.stderr
    assert out == ""


def test_step5_runs_as_a_program() -> None:
    with ServerProcess([str(TUTORIAL / "step5_backpressure.py")]) as server:
        server.wait()
    assert server.returncode == 0, server.stderr
    expected = (TUTORIAL / "step5_backpressure.out").read_text(encoding="utf-8")
    assert "\n".join(server.lines) + "\n" == expected

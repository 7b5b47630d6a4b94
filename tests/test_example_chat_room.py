"""trio_chat/demos/chat_room.py: joining, talking, renaming, leaving, limits and shutdown."""

from __future__ import annotations

import re
import socket
import struct
import unicodedata
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from chat_clients import chat_room_server
from hypothesis import given
from hypothesis import strategies as st
from server_process import ServerProcess
from serving_helpers import HOST

from trio_chat.demos import chat_room

# The launcher in examples/ runs trio_chat/demos/chat_room.py's run().
EXAMPLE = Path(__file__).parent.parent / "examples" / "chat_room.py"
# Seconds (virtual ones under autojump_clock) for a whole test: a bound for hangs, with room
# for a machine running several test suites at once.
TIMEOUT = 60
# The bidi classes of the characters that reorder text: embeddings, overrides, isolates, marks.
BIDI_CONTROLS = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}


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
            rule = f"* {chat_room.NICK_RULES}"
            assert str(chat_room.MAX_NICK) in rule
            for bad in (
                "two words",
                "x" * (chat_room.MAX_NICK + 1),
                "bell\x07",
                "1st",  # starts with a digit
                "-x",
                "\u0430lice",  # a Cyrillic a
                "ali\u0441e",  # a Cyrillic es
                "bob\u200b",  # a zero-width space
                "b\u00f6b",
            ):
                await newcomer.say(bad)
                assert await newcomer.hear() == rule
            # Taken: the same nick in another case, or with look-alike characters.
            for twin in ("alice", "ALICE", "a1ice", "AIice", "aIice"):
                await newcomer.say(twin)
                assert await newcomer.hear() == f"* {twin} is taken, try another"
            await newcomer.say("Carol-2_\r")  # a CRLF client; the longest nick also fits
            assert await newcomer.hear() == "* hello Carol-2_; here: alice"
            assert await alice.hear() == "* Carol-2_ joined"
            await newcomer.say("/nick al1ce")
            assert await newcomer.hear() == "* al1ce is taken, try another"
            await newcomer.say("/nick " + "c" * chat_room.MAX_NICK)
            assert await newcomer.hear() == f"* Carol-2_ is now known as {'c' * 30}"
            assert await alice.hear() == f"* Carol-2_ is now known as {'c' * 30}"
            # One's own nick in another case is a rename, not a clash.
            await alice.say("/nick Alice")
            assert await alice.hear() == "* alice is now known as Alice"
            await alice.say("/who")
            assert await alice.hear() == f"* here: Alice, {'c' * 30}"


@pytest.mark.parametrize(
    ("nick", "twin"),
    [
        ("alice", "ALICE"),
        ("alice", "a1ice"),  # 1 and l and i
        ("Ian", "lan"),  # capital I and small L
        ("bob0", "BOBO"),  # 0 and O
        ("modern", "rnodern"),  # rn and m
        ("wendy", "vvendy"),  # vv and w
    ],
)
def test_look_alike_nicks_have_one_key(nick: str, twin: str) -> None:
    assert chat_room.nick_problem(nick) is None
    assert chat_room.nick_problem(twin) is None
    assert chat_room.nick_key(nick) == chat_room.nick_key(twin)


def test_different_nicks_have_different_keys() -> None:
    nicks = ["alice", "bob", "carol", "dave", "al", "alicia", "bob-1", "bob_1", "bobby"]
    assert len({chat_room.nick_key(nick) for nick in nicks}) == len(nicks)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hi\r<alice> I owe bob 100", "hi\\x0d<alice> I owe bob 100"),  # CR: overwrite a line
        ("\x1b[2K\x1b[1G<alice> hi", "\\x1b[2K\\x1b[1G<alice> hi"),  # erase line, column 1
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # OSC: set the terminal's title
        ("\x9b2K", "\\x9b2K"),  # C1 CSI, ESC [ to some terminals
        ("a\x00b\x08c\x7fd\te", "a\\x00b\\x08c\\x7fd\\x09e"),
        ("one\u2028two\u2029", "one\\u2028two\\u2029"),  # Unicode line separators
        ("\u202e\u2066evil\u2069\u200f\u061c", "\\u202e\\u2066evil\\u2069\\u200f\\u061c"),  # bidi
        (
            "h\u00e9llo \U0001f44b\u200d\U0001f525 \\x1b",
            "h\u00e9llo \U0001f44b\u200d\U0001f525 \\x1b",
        ),
    ],
)
def test_printable_escapes_control_characters_only(text: str, shown: str) -> None:
    assert chat_room.printable(text) == shown


@given(st.text())
def test_printable_leaves_nothing_a_terminal_acts_on_and_loses_nothing(text: str) -> None:
    shown = chat_room.printable(text)
    for char in shown:
        assert unicodedata.category(char) not in {"Cc", "Zl", "Zp"}, repr(shown)
        assert unicodedata.bidirectional(char) not in BIDI_CONTROLS, repr(shown)
    assert chat_room.printable(shown) == shown
    if "\\" not in text:  # then every backslash in the result starts an escape
        unescaped = re.sub(
            r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})",
            lambda match: chr(int(match[1] or match[2], 16)),
            shown,
        )
        assert unescaped == text


async def test_a_member_cannot_forge_a_line_from_another() -> None:
    with trio.fail_after(TIMEOUT):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            mallory = await room.join("mallory", here="alice")
            assert await alice.hear() == "* mallory joined"
            await mallory.stream.send_all(
                b"hi\r<alice> I owe mallory 100\x1b[1A\r\n"  # CR, cursor up; CRLF ends it
                b"\xe2\x80\xaeuoy evol I <ecila>\n"  # RIGHT-TO-LEFT OVERRIDE
                b"\xff\xfe bad UTF-8\n"
            )
            assert await alice.hear() == "<mallory> hi\\x0d<alice> I owe mallory 100\\x1b[1A"
            assert await alice.hear() == "<mallory> \\u202euoy evol I <ecila>"
            assert await alice.hear() == "<mallory> \ufffd\ufffd bad UTF-8"
            # Every byte alice got is printable ASCII or plain text: no control characters.
            await alice.say("/who")
            assert await alice.hear() == "* here: alice, mallory"


@pytest.mark.heavy
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
            assert await alice.hear() == "* mallory left (line too long)"
            await alice.say("/who")
            assert await alice.hear() == "* here: alice"


async def test_a_member_that_resets_or_hangs_up_leaves_and_the_others_are_told_why() -> None:
    with trio.fail_after(TIMEOUT):
        async with chat_room_server() as room:
            alice = await room.join("alice")
            bob = await room.join("bob", here="alice")
            carol = await room.join("carol", here="alice, bob")
            for _ in range(2):
                assert await alice.hear() in {"* bob joined", "* carol joined"}
            assert await bob.hear() == "* carol joined"
            # bob's connection is reset (SO_LINGER 0: close() sends RST), carol just hangs up.
            bob.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await bob.stream.aclose()
            assert await alice.hear() == "* bob left (connection lost)"
            await carol.stream.send_eof()
            assert await alice.hear() == "* carol left"


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
            assert await keen.hear() == "* quiet left (timed out)"  # ...while quiet's timed out
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


@pytest.mark.parametrize("command", [[str(EXAMPLE)], ["-m", "trio_chat.demos.chat_room"]])
async def test_runs_as_a_program(command: list[str]) -> None:
    with ServerProcess([*command, "--port", "0"]) as server:
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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2"], "--workers N needs --redis URL"),
        (["--workers", "2", "--redis", "redis://127.0.0.1:1"], "--workers N needs a fixed --port"),
        (["--workers", "0"], "--workers must be 1 or more"),
    ],
)
def test_wrong_options_are_refused_plainly(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chat_room.run(["--port", "0", *arguments]) == 2
    assert message in capsys.readouterr().err

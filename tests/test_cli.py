"""``python -m trio_chat``, end to end: each demo in a subprocess on a free loopback port."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import TIMEOUT, ServerProcess, talk

import trio_chat.__main__ as cli

ROOT = Path(__file__).parent.parent


def test_echo() -> None:
    with ServerProcess(["-m", "trio_chat", "echo", "--port", "0"]) as server:
        match = server.wait_for(r"on 127\.0\.0\.1:(\d+); connect with: nc 127\.0\.0\.1 (\d+)")
        assert match[1] == match[2]
        port = int(match[1])
        assert talk(port, b"hello\nwor", until_eof=False, expect=b"hello\n") == b"hello\n"
        assert talk(port, b"ld\n", until_eof=False, expect=b"\n") == b"ld\n"
        out = server.stop()
    assert server.returncode == 0, server.stderr
    assert out == "stopped; served 2 connection(s)"
    assert server.stderr == ""


def test_chat() -> None:
    with ServerProcess(["-m", "trio_chat", "chat", "--port", "0"]) as server:
        match = server.wait_for(
            r"^trio_chat chat server \(a chat room: every line goes to everyone\) on "
            r"127\.0\.0\.1:(\d+); connect with: nc 127\.0\.0\.1 (\d+)   \(Ctrl-C stops it\)$"
        )
        assert match[1] == match[2]
        port = int(match[1])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as alice,
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as bob,
            alice.makefile("rb") as alice_lines,
            bob.makefile("rb") as bob_lines,
        ):
            assert alice_lines.readline() == b"Welcome! Your nick?\n"
            alice.sendall(b"alice\n")
            assert alice_lines.readline() == b"* hello alice; here: \n"
            assert bob_lines.readline() == b"Welcome! Your nick?\n"
            bob.sendall(b"bob\r\n")
            assert bob_lines.readline() == b"* hello bob; here: alice\n"
            assert alice_lines.readline() == b"* bob joined\n"
            bob.sendall(b"hello, room\n")
            assert alice_lines.readline() == b"<bob> hello, room\n"
            out = server.stop()
            # Ctrl-C cancels the server: each member's connection is closed.
            assert alice_lines.readline() == b""
            assert bob_lines.readline() == b""
    assert server.returncode == 0, server.stderr
    assert out == "stopped; served 2 connection(s)"
    assert server.stderr == ""


def test_http() -> None:
    with ServerProcess(["-m", "trio_chat", "http", "--port", "0"]) as server:
        match = server.wait_for(r"connect with: curl http://127\.0\.0\.1:(\d+)/hello")
        port = int(match[1])
        reply = talk(port, b"GET /hello HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 200 OK\r\n")
        assert reply.endswith(b"\r\n\r\nHello from trio_chat! You asked for /hello\n")
        reply = talk(port, b"POST /f HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b")
        assert reply.endswith(b"\r\n\r\nYou posted 1 field(s) to /f\na = b\n")
        server.wait_for(r"^127\.0\.0\.1:\d+ POST /f 200$")  # the access log, one line each
        out = server.stop()
    assert server.returncode == 0, server.stderr
    assert out == "stopped; served 2 connection(s)"
    assert re.search(r"^127\.0\.0\.1:\d+ GET /hello 200$", "\n".join(server.lines), re.M)


def test_trace_shows_each_connection_come_and_go() -> None:
    with ServerProcess(["-m", "trio_chat", "chat", "--port", "0", "--trace"]) as server:
        port = server.port()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as alice,
            alice.makefile("rb") as alice_lines,
        ):
            assert alice_lines.readline() == b"Welcome! Your nick?\n"
            alice.sendall(b"alice\n")
            assert alice_lines.readline() == b"* hello alice; here: \n"
            server.wait_for(r"^--- task tree: 1 connection\(s\) open ---$")
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as bob,
                bob.makefile("rb") as bob_lines,
            ):
                assert bob_lines.readline() == b"Welcome! Your nick?\n"
                bob.sendall(b"bob\n")
                assert bob_lines.readline() == b"* hello bob; here: alice\n"
                # Pushed from bob's task: alice's connection starts its send loop for it.
                assert alice_lines.readline() == b"* bob joined\n"
                server.wait_for(r"send loop")  # the picture after that
        server.wait_for(r"^--- task tree: 0 connection\(s\) open ---$")
        out = server.stop()
    assert server.returncode == 0, server.stderr
    assert out.endswith("stopped; served 2 connection(s)")
    text = "\n".join(server.lines)
    first_send_loop = text.index("send loop")
    picture = text[text.rindex("--- task tree:", 0, first_send_loop) :]
    assert picture.startswith("--- task tree: 2 connection(s) open ---"), picture
    # The structure the tutorial's diagram shows: server nursery -> connection task (running
    # the receive loop itself) -> run()'s nursery -> send loop, here for alice (connection 1)
    # only: bob's replies were all written by his own receive loop.
    assert re.search(
        r"\n(?P<indent>[|` ]*)[|`]-- .*<- connection 1 \(127\.0\.0\.1:\d+\): run\(\) and its "
        r"receive loop\n(?P=indent)[|` ]   `-- nursery  <- AsyncChat\.run's: close\(\) cancels it\n"
        r"(?P=indent)[|` ]       `-- \S+  <- send loop",
        picture,
    ), picture
    assert picture.count("<- send loop") == 1, picture
    assert "trio_chat.serve_listeners" in picture
    assert "<init>  <- trio's root task" in picture


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "trio_chat", "echo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port N (0 picks a free one)" in result.stderr


def test_every_demo_takes_host_port_and_trace() -> None:
    for name in cli.DEMOS:
        args = cli.parse_args([name])
        assert (args.demo, args.host, args.port, args.trace) == (name, "127.0.0.1", 7777, False)
        args = cli.parse_args([name, "--host", "::1", "--port", "0", "--trace"])
        assert (args.host, args.port, args.trace) == ("::1", 0, True)
    with pytest.raises(SystemExit):
        cli.parse_args([])


def _block(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    begin, end = f"# --- {name}: begin ---\n", f"# --- {name}: end ---\n"
    assert text.count(begin) == 1 and text.count(end) == 1, (path, name)
    return text[text.index(begin) : text.index(end)]


@pytest.mark.parametrize(
    ("name", "example"),
    [("HttpRequestHandler", "http_request_reader.py"), ("Room and Member", "chat_room.py")],
)
def test_demo_handlers_are_verbatim_copies_of_the_examples(name: str, example: str) -> None:
    # The package cannot import examples/ (it is not installed), so _demo.py holds a copy of the
    # handler the docs show; this keeps the two from drifting apart.
    copy = _block(ROOT / "trio_chat" / "_demo.py", name)
    assert copy == _block(ROOT / "examples" / example, name), (
        f"trio_chat/_demo.py's {name} differs from examples/{example}'s: copy it over again"
    )

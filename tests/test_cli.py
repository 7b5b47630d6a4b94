"""``python -m trio_chat``, end to end: each demo in a subprocess on a free loopback port."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import pytest
from server_process import TIMEOUT, ServerProcess, talk
from worker_helpers import reserved_port

import trio_chat._cli as cli

ipv6_loopback = pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_chat", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_echo_and_ctrl_c_exits_130_with_one_line() -> None:
    with ServerProcess(["-m", "trio_chat", "echo", "--port", "0"]) as server:
        match = server.wait_for(r"on 127\.0\.0\.1:(\d+); connect with: nc 127\.0\.0\.1 (\d+)")
        assert match[1] == match[2]
        port = int(match[1])
        assert talk(port, b"hello\nwor", until_eof=False, expect=b"hello\n") == b"hello\n"
        assert talk(port, b"ld\n", until_eof=False, expect=b"\n") == b"ld\n"
        out = server.stop()  # SIGINT, as Ctrl-C sends
    assert server.returncode == 130, server.stderr
    assert out == "stopped; served 2 connection(s)"
    assert server.stderr == ""  # no traceback, no exception group


def test_sigterm_is_a_clean_exit() -> None:
    with ServerProcess(["-m", "trio_chat", "echo", "--port", "0"]) as server:
        server.port()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        out = server.wait()
    assert server.returncode == 0, server.stderr
    assert out == "stopped; served 0 connection(s)"
    assert server.stderr == ""


def test_ctrl_c_shuts_down_gracefully_and_says_goodbye_in_the_chat() -> None:
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
            # The goodbye is pushed before the connections are told to close: everyone reads
            # it, then the end of the connection (not a reset).
            for lines in (alice_lines, bob_lines):
                assert lines.readline() == b"* the server is shutting down\n"
                assert lines.readline() == b""
    assert server.returncode == 130, server.stderr
    assert out == "stopped; served 2 connection(s)"
    assert server.stderr == ""


def test_http_keeps_the_connection_alive() -> None:
    with ServerProcess(["-m", "trio_chat", "http", "--port", "0"]) as server:
        match = server.wait_for(r"connect with: curl http://127\.0\.0\.1:(\d+)/hello")
        port = int(match[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(
                b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nHEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            received = b""
            while received.count(b"HTTP/1.1 200 OK") < 2:
                data = sock.recv(65536)
                assert data, received
                received += data
        assert received.endswith(b"Content-Length: 39\r\n\r\n")  # HEAD: no body
        reply = talk(port, b"POST /f HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close" in reply
        assert reply.endswith(b"\r\n\r\nYou posted 1 field(s) to /f\na = b\n")
        server.wait_for(r"^127\.0\.0\.1:\d+ POST /f 200$")  # the access log, one line each
        out = server.stop()
    assert server.returncode == 130, server.stderr
    assert out == "stopped; served 2 connection(s)"
    log = "\n".join(server.lines)
    assert re.search(r"^127\.0\.0\.1:(\d+) GET /hello 200\n127\.0\.0\.1:\1 HEAD /h 200$", log, re.M)


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
                # Pushed from bob's task: alice's connection has a send loop for it.
                assert alice_lines.readline() == b"* bob joined\n"
                server.wait_for(r"^--- task tree: 2 connection\(s\) open ---$")
                server.wait_for(r"send loop")
        server.wait_for(r"^--- task tree: 0 connection\(s\) open ---$")
        out = server.stop()
    assert server.returncode == 130, server.stderr
    assert out.endswith("stopped; served 2 connection(s)")
    text = "\n".join(server.lines)
    two = text.rindex("--- task tree: 2 connection(s) open ---")
    picture = text[two : text.index("--- task tree:", two + 1)]
    # The structure the tutorial's diagram shows: the connections nursery -> connection task
    # (running the receive loop itself) -> run()'s nursery -> send loop, under alice's.
    assert re.search(
        r"\n(?P<indent>[|` ]*)[|`]-- .*<- connection 1 \(127\.0\.0\.1:\d+\): run\(\) and its "
        r"receive loop\n(?P=indent)[|` ]   `-- nursery  <- AsyncChat\.run's: close\(\) cancels it\n"
        r"(?P=indent)[|` ]       `-- \S+  <- send loop",
        picture,
    ), picture
    assert "<- connection 2 (127.0.0.1:" in picture
    assert "trio_chat.serve_listeners" in picture
    assert "<- accept loop: one per listening socket" in picture
    assert "<init>  <- trio's root task" in picture


@needs_ipv6
def test_two_hosts_share_one_port_and_ipv6_is_bracketed() -> None:
    args = ["-m", "trio_chat", "http", "--port", "0", "--host", "127.0.0.1", "--host", "::1"]
    with ServerProcess(args) as server:
        match = server.wait_for(
            r"on 127\.0\.0\.1:(\d+) and \[::1\]:(\d+); connect with: curl http://127\.0\.0\.1:"
        )
        assert match[1] == match[2]
        port = int(match[1])
        with socket.create_connection(("::1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /six HTTP/1.0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        server.wait_for(r"^\[::1\]:\d+ GET /six 200$")  # the peer, in brackets
        server.stop()
    assert server.returncode == 130, server.stderr


@needs_ipv6
@pytest.mark.parametrize(
    ("host", "hint"),
    [("::1", "curl http://[::1]:"), ("::", "curl http://[::1]:"), ("[::1]", "curl http://[::1]:")],
)
def test_ipv6_hints_dial_a_real_address(host: str, hint: str) -> None:
    with ServerProcess(["-m", "trio_chat", "http", "--port", "0", "--host", host]) as server:
        line = server.wait_for(r"^.*connect with: .*$")[0]
        server.stop()
    assert hint in line
    assert re.search(r"on \[::1?\]:\d+;", line), line


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("echo", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"cannot listen on 127.0.0.1:{port}: the port is taken; pick another with --port N "
        "(0 picks a free one)\n"
    )


def test_an_address_of_another_machine_is_reported() -> None:
    result = run_cli("echo", "--port", "0", "--host", "192.0.2.1")  # TEST-NET-1: never local
    assert result.returncode == 1
    assert "192.0.2.1 is not an address of this machine; use --host 127.0.0.1" in result.stderr
    assert "--port" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "'99999' is not a port: give a number from 1 to 65535"),
        (["--port", "-1"], "'-1' is not a port"),
        (["--port", "http"], "'http' is not a port"),
        (["--host", "no such host!"], "is neither an IP address nor a host name: give 127.0.0.1"),
        (["--max-per-peer", "0"], "give a whole number of 1 or more, or 'none'"),
        (["--idle-timeout", "-5"], "give a number of seconds over 0, or 'none'"),
        (["--frame-timeout", "nan"], "give a number of seconds over 0, or 'none'"),
        (["--grace-period", "soon"], "give a number of seconds, 0 or more"),
    ],
)
def test_bad_arguments_name_the_problem_and_the_fix(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["echo", *args])
    assert exit_info.value.code == 2
    result = run_cli("echo", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_demo_takes_the_common_options() -> None:
    for name in cli.DEMOS:
        args = cli.parse_args([name])
        assert (args.demo, args.host, args.port, args.trace) == (name, ["127.0.0.1"], 7777, False)
        assert (args.max_connections, args.max_per_peer) == ("auto", None)
        assert (args.idle_timeout, args.frame_timeout, args.grace_period) == (None, None, 5.0)
        args = cli.parse_args(
            [
                *[name, "--host", "::1", "--host", "0.0.0.0", "--port", "0", "--trace"],
                *["--max-connections", "10", "--max-per-peer", "3", "--idle-timeout", "60"],
                *["--frame-timeout", "2.5", "--grace-period", "0"],
            ]
        )
        assert (args.host, args.port, args.trace) == (["::1", "0.0.0.0"], 0, True)
        assert (args.max_connections, args.max_per_peer) == (10, 3)
        assert (args.idle_timeout, args.frame_timeout, args.grace_period) == (60.0, 2.5, 0.0)
        assert cli.parse_args([name, "--max-connections", "none"]).max_connections is None
    with pytest.raises(SystemExit):
        cli.parse_args([])


async def test_the_flags_become_serving_options() -> None:
    args = cli.parse_args(
        ["chat", "--max-per-peer", "4", "--idle-timeout", "9", "--frame-timeout", "3"]
    )
    async with cli.DEMOS["chat"].serve(args) as served:
        options = cli._limits(args, served)
    assert options["max_connections_per_peer"] == 4
    assert options["idle_timeout"] == 9.0
    assert options["frame_timeout"] == 3.0
    assert options["max_connections"] == "auto"
    # Without the flags the demo's own settings stay (the chat room's 15 minutes).
    args = cli.parse_args(["chat"])
    async with cli.DEMOS["chat"].serve(args) as served:
        options = cli._limits(args, served)
    assert options["idle_timeout"] == 15 * 60.0
    assert "frame_timeout" not in options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["echo", "--workers", "2", "--port", "0"], "--workers N needs a fixed --port"),
        (["chat", "--workers", "2", "--port", "7777"], "--workers N needs --redis URL"),
        (["echo", "--workers", "2", "--port", "7777", "--trace"], "leave out --workers"),
        (["chat", "--nick-ttl", "5"], "--nick-ttl applies to a room shared through Redis"),
        (["echo", "--workers", "0"], "give a whole number of 1 or more"),
    ],
)
def test_worker_options_that_cannot_work_are_refused(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_workers_share_one_port() -> None:
    with reserved_port() as port:
        args = ["-m", "trio_chat", "echo", "--workers", "2", "--port", str(port)]
        with ServerProcess(args) as server:
            for _ in range(2):  # one banner per worker, on the same port
                server.wait_for(rf"on 127\.0\.0\.1:{port}; connect with")
            for n in range(10):
                line = b"line %d\n" % n
                assert talk(port, line, until_eof=False, expect=b"\n") == line
            out = server.stop()
    assert server.returncode == 0, server.stderr
    assert out.splitlines()[-1] == "stopped"
    served = [int(m[1]) for m in re.finditer(r"served (\d+) connection", out)]
    assert len(served) == 2 and sum(served) == 10, out

"""The load generator: drives one server through one workload with plain blocking sockets.

Every server gets the same client, so the client's cost (which shares the CPU with the server
when both are pinned to one) is the same for all of them. Prints one JSON object on stdout:
``{"workload", "value", "unit", "elapsed", "count", ...}``; exits non-zero (with the reason on
stderr) if the server's answers or its end-of-input report do not match what was sent.

Bounds: every workload sends a fixed count, and every socket has kernel-level send and receive
timeouts (``SO_SNDTIMEO``/``SO_RCVTIMEO``, which cost nothing per call, unlike Python's
``settimeout``); the orchestrator also kills a load generator that outlives its own timeout.

``--workload smtp`` is the SMTP workload's client: ``smtplib`` sends ``--count`` messages of
``--body-size`` bytes on one connection, checking the server's account of every message (its
length and CRC-32), and the result also holds the server's CPU time per message
(``cpu_us``, from ``/proc/<server-pid>/stat``).
"""

from __future__ import annotations

import argparse
import json
import selectors
import smtplib
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from checks import CheckFailedError, make_body, send_message, smtp_expected
from suite_common import (
    ECHO_LINE,
    ECHO_LINE_SIZE,
    HOST,
    LINE_SIZES,
    MESSAGE_SIZE,
    MODES,
    UNITS,
    WORKLOADS,
    cpu_seconds,
    pin_to_cpu,
    raise_nofile_limit,
)

# Lines are sent in blocks of this many bytes: few enough send() calls that the client's Python
# overhead is negligible, small enough to build quickly.
BLOCK_SIZE: Final = 1024 * 1024
ECHO: Final = ECHO_LINE + b"\n"


class MismatchError(Exception):
    """The server's answer was not what it should have been."""


def connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    return sock


def read_report(sock: socket.socket) -> tuple[int, int]:
    """Half-close, then read the server's ``frames bytes`` report up to EOF."""
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while data := sock.recv(4096):
        chunks.append(data)
    sock.close()
    text = b"".join(chunks)
    try:
        frames, payload = text.split()
        return int(frames), int(payload)
    except ValueError:
        raise MismatchError(f"bad report from the server: {text[:200]!r}") from None


def check(what: str, got: int, want: int) -> None:
    if got != want:
        raise MismatchError(f"server counted {got:,} {what}, expected {want:,}")


def line_block(line_size: int) -> bytes:
    """``BLOCK_SIZE`` bytes of distinct ``line_size``-byte lines (the last byte is b"\\n")."""
    body = line_size - 1
    lines = [(b"%d:" % i).ljust(body, b"x")[:body] for i in range(BLOCK_SIZE // line_size)]
    return b"\n".join(lines) + b"\n"


def stream_lines(port: int, line_size: int, count: int, timeout: float, *, sink: bool) -> float:
    """W0/W1/W2: send *count* lines, half-close, wait for the report; returns the seconds."""
    block = line_block(line_size)
    per_block = len(block) // line_size
    full, rest = divmod(count, per_block)
    tail = block[: rest * line_size]
    sock = connect(port, timeout)
    t0 = time.perf_counter()
    sendall = sock.sendall
    for _ in range(full):
        sendall(block)
    if tail:
        sendall(tail)
    frames, payload = read_report(sock)
    elapsed = time.perf_counter() - t0
    if sink:
        check("bytes", payload, count * line_size)
    else:
        check("lines", frames, count)
        check("line bytes", payload, count * (line_size - 1))
    return elapsed


def stream_messages(port: int, count: int, timeout: float) -> float:
    """W3: *count* messages of ``MESSAGE_SIZE`` bytes, each after a ``b"%d\\n"`` header."""
    payload = bytes(range(256)) * (MESSAGE_SIZE // 256)
    one = b"%d\n" % len(payload) + payload
    group = max(1, BLOCK_SIZE // len(one))
    block = one * group
    full, rest = divmod(count, group)
    sock = connect(port, timeout)
    t0 = time.perf_counter()
    sendall = sock.sendall
    for _ in range(full):
        sendall(block)
    if rest:
        sendall(one * rest)
    frames, got = read_report(sock)
    elapsed = time.perf_counter() - t0
    check("messages", frames, count)
    check("message bytes", got, count * MESSAGE_SIZE)
    return elapsed


def round_trip(sock: socket.socket) -> None:
    sock.sendall(ECHO)
    reply = sock.recv(ECHO_LINE_SIZE)
    while len(reply) < ECHO_LINE_SIZE:
        more = sock.recv(ECHO_LINE_SIZE - len(reply))
        if not more:
            raise MismatchError("the server closed the connection in the middle of a round trip")
        reply += more
    if reply != ECHO:
        raise MismatchError(f"echo mismatch: sent {ECHO!r}, got {reply!r}")


def echo_one(port: int, count: int, timeout: float) -> float:
    """W4: *count* round trips on one connection (after one untimed warm-up round trip)."""
    sock = connect(port, timeout)
    round_trip(sock)
    t0 = time.perf_counter()
    for _ in range(count):
        round_trip(sock)
    elapsed = time.perf_counter() - t0
    frames, payload = read_report(sock)
    check("lines", frames, count + 1)
    check("line bytes", payload, (count + 1) * len(ECHO_LINE))
    return elapsed


def echo_many(port: int, connections: int, count: int, timeout: float) -> float:
    """W5: *count* round trips on each of *connections* connections, multiplexed with a selector.

    The sockets stay blocking: the selector only says which one has a reply, and a 64-byte send
    to a socket with nothing outstanding never blocks.
    """
    socks = [connect(port, timeout) for _ in range(connections)]
    for sock in socks:
        round_trip(sock)  # untimed: every connection is accepted and its handler running
    remaining = [count] * connections
    partial = [b""] * connections
    active = connections
    with selectors.DefaultSelector() as sel:
        t0 = time.perf_counter()
        for i, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, i)
            sock.sendall(ECHO)
        while active:
            events = sel.select(timeout)
            if not events:
                raise TimeoutError(f"no reply for {timeout} s with {active} connections busy")
            for key, _ in events:
                i = key.data
                sock = socks[i]
                data = sock.recv(ECHO_LINE_SIZE)
                if not data:
                    raise MismatchError(
                        "the server closed a connection in the middle of a round trip"
                    )
                reply = partial[i] + data if partial[i] else data
                if len(reply) < ECHO_LINE_SIZE:
                    partial[i] = reply
                    continue
                partial[i] = b""
                if reply != ECHO:
                    raise MismatchError(f"echo mismatch: sent {ECHO!r}, got {reply!r}")
                remaining[i] -= 1
                if remaining[i]:
                    sock.sendall(ECHO)
                else:
                    sel.unregister(sock)
                    active -= 1
        elapsed = time.perf_counter() - t0
    for sock in socks:
        frames, _ = read_report(sock)
        check("lines on one connection", frames, count + 1)
    return elapsed


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])  # the kernel reports kB = KiB
    raise RuntimeError(f"no VmRSS for process {pid}")


def idle(
    port: int, connections: int, server_pid: int, timeout: float
) -> tuple[float, dict[str, Any]]:
    """W6: server memory per idle connection, from its VmRSS before and after *connections*.

    One warm-up connection first (so lazily built server state is not counted), then each
    connection does one round trip (so the server has accepted it and set up its handler), then
    all stay open and idle while the server's RSS is read.
    """
    warm = connect(port, timeout)
    round_trip(warm)
    warm.close()
    time.sleep(0.3)
    before = vm_rss_kib(server_pid)
    socks = []
    t0 = time.perf_counter()
    for _ in range(connections):
        sock = connect(port, timeout)
        round_trip(sock)
        socks.append(sock)
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # let the server settle (e.g. finish writing, run its GC)
    after = vm_rss_kib(server_pid)
    for sock in socks:
        sock.close()
    per_connection = (after - before) / connections
    return per_connection, {"rss_before_kib": before, "rss_after_kib": after, "elapsed": elapsed}


def smtp(
    port: int, body_size: int, count: int, server_pid: int, timeout: float
) -> tuple[float, dict[str, Any]]:
    """SMTP: *count* messages of *body_size* bytes through smtplib, after one untimed message."""
    body = make_body(body_size)
    expected = smtp_expected(body)
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        client.ehlo("loadgen.invalid")
        send_message(client, body, expected)
        cpu0 = cpu_seconds(server_pid)
        t0 = time.perf_counter()
        for _ in range(count):
            send_message(client, body, expected)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(server_pid) - cpu0
        client.quit()
    return count / elapsed, {"elapsed": elapsed, "cpu_us": cpu / count * 1e6, "count": count}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workload", choices=(*WORKLOADS, "smtp"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-size", type=int, default=1024, help="for smtp: bytes per message")
    parser.add_argument("--count", type=int, required=True, help="lines, messages, round trips")
    parser.add_argument("--connections", type=int, default=1, help="for W5 and W6")
    parser.add_argument("--server-pid", type=int, default=0, help="for W6: whose VmRSS to read")
    parser.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (-1: none)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per socket call")
    args = parser.parse_args(argv)
    pin_to_cpu(args.cpu)
    raise_nofile_limit(args.connections + 64)
    w = args.workload
    extra: dict[str, Any] = {}
    try:
        if w == "smtp":
            value, extra = smtp(
                args.port, args.body_size, args.count, args.server_pid, args.timeout
            )
            print(json.dumps({"workload": w, "value": value, "unit": "msg/s", **extra}))
            return 0
        if MODES[w] in ("sink", "lines"):
            elapsed = stream_lines(
                args.port, LINE_SIZES[w], args.count, args.timeout, sink=MODES[w] == "sink"
            )
            value = args.count / elapsed
        elif w == "W3":
            elapsed = stream_messages(args.port, args.count, args.timeout)
            value = args.count * MESSAGE_SIZE / elapsed / 1e6
        elif w == "W4":
            elapsed = echo_one(args.port, args.count, args.timeout)
            value = args.count / elapsed
        elif w == "W5":
            elapsed = echo_many(args.port, args.connections, args.count, args.timeout)
            value = args.connections * args.count / elapsed
        else:
            value, extra = idle(args.port, args.connections, args.server_pid, args.timeout)
            elapsed = extra.pop("elapsed")
    except (MismatchError, CheckFailedError, smtplib.SMTPException, OSError) as exc:
        print(f"loadgen {w}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    result = {"workload": w, "value": value, "unit": UNITS[w], "elapsed": elapsed, **extra}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

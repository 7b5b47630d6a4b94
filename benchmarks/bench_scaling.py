"""Past one core: the echo workload on 1 vs N worker processes, and the chat room's fan-out
in one process vs over Redis. Not a test: it prints figures (and, with ``--json FILE``, saves
them).

    python benchmarks/bench_scaling.py                 # everything, about two minutes
    python benchmarks/bench_scaling.py --runs 3        # each setup 3 times, taking turns: medians
    python benchmarks/bench_scaling.py --only echo     # or: --only chat

Echo: 100 connections, each doing ``--round-trips`` round trips of one 64-byte line (the
suite's W5), against ``run_workers()`` with 1 and with 2 workers listening on one port with
``SO_REUSEPORT``. The client is one process multiplexing its sockets with a selector; it shares
the machine with the workers, as it would on a 2-core box.

Chat: ``--members`` members (default 50) each say one line a second for ``--seconds`` seconds
(default 20), spread evenly over the second, to ``trio_chat/demos/chat_room.py`` in one process
(in-process room), in one process on Redis, and in 2 worker processes on Redis. Every member
hears every other member's lines; the latency of a delivery is from the sender's ``send_all``
to the line's arrival at a receiver (one client process, one clock).

CPU per message is the server processes' user + system time (from ``/proc/PID/stat``) over the
run, divided by the messages: round trips for echo, lines said for chat (redis-server's own CPU
is reported beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

HOST: Final = "127.0.0.1"
ECHO_LINE: Final = b"%063d\n" % 0
STARTUP_TIMEOUT: Final = 30.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the echo server side


async def echo_worker(port: int, worker: Any) -> None:
    """One echo worker: listen on *port* beside the others, serve until the shutdown event."""
    import trio_chat
    from trio_chat.demos.echo import EchoHandler

    listeners = await trio_chat.open_tcp_listeners_reuseport(port, host=HOST)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                trio_chat.serve_listeners,
                EchoHandler,
                listeners,
                shutdown_event=worker.shutdown_event,
                max_connections=None,
            )
        )
        # One write per line: the workers share standard output (print() may write the text
        # and its newline separately).
        sys.stdout.write(f"worker {worker.number} pid {os.getpid()} ready\n")
        sys.stdout.flush()


def serve_echo(port: int, workers: int) -> None:
    import trio_chat

    trio_chat.run_workers(partial(echo_worker, port), workers)


# ---------------------------------------------------------------- processes and CPU


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def reserved_port() -> Iterator[int]:
    """A free port, held by a bound non-listening SO_REUSEPORT socket (it gets no connections)."""
    with socket.socket() as placeholder:
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((HOST, 0))
        yield placeholder.getsockname()[1]


class Server:
    """A server process; :meth:`wait_for` reads its output, each line within the start-up bound."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
        )
        self.pids = [self.proc.pid]
        # A thread reads the output, so that every wait for a line has a timeout.
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The next output line that matches *pattern*."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if not line:
                raise RuntimeError(f"{self.args}: no line matching {pattern!r}")
            if match := re.search(pattern, line):
                return match

    def worker_pids(self, workers: int) -> None:
        """Count the workers' CPU too (the supervisor's is counted, and is next to none)."""
        self.pids += [int(self.wait_for(r"\bpid (\d+)")[1]) for _ in range(workers)]

    def banner_port(self) -> int:
        """The port in the banner (``127.0.0.1:PORT``)."""
        return int(self.wait_for(r"127\.0\.0\.1:(\d+)")[1])

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of *samples* (seconds), in milliseconds."""
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": cut[49] * 1000,
        "p90_ms": cut[89] * 1000,
        "p99_ms": cut[98] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


# ---------------------------------------------------------------- the echo client


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=STARTUP_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_load(port: int, connections: int, round_trips: int) -> tuple[float, list[float]]:
    """*round_trips* on each of *connections* sockets; (elapsed seconds, latencies)."""
    socks = [connect(port) for _ in range(connections)]
    for sock in socks:  # warm-up, untimed: every connection accepted and answered once
        sock.sendall(ECHO_LINE)
        if sock.recv(len(ECHO_LINE), socket.MSG_WAITALL) != ECHO_LINE:
            raise RuntimeError("echo mismatch")
    remaining = [round_trips] * connections
    sent = [0.0] * connections
    partial_reply = [b""] * connections
    latencies: list[float] = []
    active = connections
    with selectors.DefaultSelector() as selector:
        started = time.perf_counter()
        for number, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, number)
            sent[number] = time.perf_counter()
            sock.sendall(ECHO_LINE)
        while active:
            events = selector.select(STARTUP_TIMEOUT)
            if not events:
                raise TimeoutError("no echo for 30 s")
            for key, _ in events:
                number = key.data
                sock = socks[number]
                reply = partial_reply[number] + sock.recv(len(ECHO_LINE))
                if len(reply) < len(ECHO_LINE):
                    partial_reply[number] = reply
                    continue
                now = time.perf_counter()
                partial_reply[number] = b""
                if reply != ECHO_LINE:
                    raise RuntimeError(f"echo mismatch: {reply!r}")
                latencies.append(now - sent[number])
                remaining[number] -= 1
                if remaining[number]:
                    sent[number] = now
                    sock.sendall(ECHO_LINE)
                else:
                    selector.unregister(sock)
                    active -= 1
        elapsed = time.perf_counter() - started
    for sock in socks:
        sock.close()
    return elapsed, latencies


def bench_echo(workers: int, connections: int, round_trips: int) -> dict[str, Any]:
    with reserved_port() as port:
        server = Server([__file__, "--serve-echo", str(workers), str(port)])
        try:
            server.worker_pids(workers)
            cpu_before = server.cpu()
            elapsed, latencies = echo_load(port, connections, round_trips)
            cpu = server.cpu() - cpu_before
        finally:
            server.stop()
    total = connections * round_trips
    return {
        "workload": f"echo, {connections} connections",
        "server": f"{workers} worker(s)",
        "round_trips_per_s": total / elapsed,
        "cpu_us_per_round_trip": cpu / total * 1e6,
        "server_cpu_s": cpu,
        "elapsed_s": elapsed,
        **percentiles(latencies),
    }


# ---------------------------------------------------------------- the chat room


async def chat_load(port: int, members: int, seconds: float) -> tuple[int, int, list[float]]:
    """*members* clients each say a line a second; (lines said, deliveries, latencies)."""
    said = 0
    deliveries = 0
    latencies: list[float] = []
    streams: list[trio.SocketStream] = []
    expected = members * (members - 1) * int(seconds)
    everyone_heard = trio.Event()

    async def hear(stream: trio.SocketStream) -> None:
        nonlocal deliveries
        buffer = b""
        while True:
            data = await stream.receive_some()
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            now = time.monotonic()
            for line in lines:
                if line.startswith(b"<"):  # "<nick> t=SENT": a member's line
                    latencies.append(now - float(line.rsplit(b"t=", 1)[1]))
                    deliveries += 1
                    if deliveries == expected:
                        everyone_heard.set()

    async def talk(number: int, stream: trio.SocketStream) -> None:
        nonlocal said
        await trio.sleep(number / members)  # spread the members over each second
        start = trio.current_time()
        for tick in range(int(seconds)):
            await trio.sleep_until(start + tick)
            await stream.send_all(b"t=%r\n" % time.monotonic())
            said += 1

    with trio.fail_after(seconds + 60):
        async with trio.open_nursery() as nursery:
            for number in range(members):
                stream = await trio.open_tcp_stream(HOST, port)
                streams.append(stream)
                await stream.send_all(b"m%d\n" % number)
            await trio.sleep(1)  # everyone has joined (and heard the joins)
            for stream in streams:
                nursery.start_soon(hear, stream)
            async with trio.open_nursery() as talkers:
                for number, stream in enumerate(streams):
                    talkers.start_soon(talk, number, stream)
            with trio.move_on_after(10):
                await everyone_heard.wait()
            nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    return said, deliveries, latencies


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    wait_until_accepting(port)
    return proc, port


def wait_until_accepting(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


def bench_chat(setup: str, members: int, seconds: float) -> dict[str, Any]:
    args = ["-m", "trio_chat.demos.chat_room"]
    redis: subprocess.Popen[bytes] | None = None
    if setup != "in-process":
        redis, redis_port = start_redis()
        args += ["--redis", f"redis://{HOST}:{redis_port}/0"]
    try:
        with reserved_port() as reserved:
            workers = setup == "redis, 2 workers"
            # Workers listen beside the reserved socket (SO_REUSEPORT) and print their pids;
            # one process listens without SO_REUSEPORT, on a port of its own (from its banner).
            port_option = str(reserved) if workers else "0"
            server = Server(
                [*args, "--port", port_option, *(["--workers", "2"] if workers else [])]
            )
            try:
                if workers:
                    server.worker_pids(2)
                    port = reserved
                else:
                    port = server.banner_port()
                cpu_before = server.cpu()
                redis_before = cpu_seconds(redis.pid) if redis is not None else 0.0
                said, deliveries, latencies = trio.run(chat_load, port, members, seconds)
                cpu = server.cpu() - cpu_before
                redis_cpu = cpu_seconds(redis.pid) - redis_before if redis is not None else 0.0
            finally:
                server.stop()
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
    return {
        "workload": f"chat, {members} members x 1 line/s",
        "server": setup,
        "lines_said": said,
        "deliveries": deliveries,
        "deliveries_expected": said * (members - 1),
        "cpu_us_per_line": cpu / said * 1e6,
        "redis_cpu_us_per_line": redis_cpu / said * 1e6,
        "server_cpu_s": cpu,
        **percentiles(latencies),
    }


# ---------------------------------------------------------------- the program


def show(results: list[dict[str, Any]], label: str) -> None:
    for result in results:
        figures = ", ".join(
            f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in result.items()
            if key not in {"workload", "server"}
        )
        print(f"{label:<7} {result['workload']:<34} {result['server']:<18} {figures}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["echo", "chat"])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--round-trips", type=int, default=2000, help="per connection")
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="repeat, and show the medians")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--serve-echo", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo[1], args.serve_echo[0])
        return
    print(
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, trio {trio.__version__}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    # The setups take turns, run after run, so a machine that gets busier or quieter meanwhile
    # shifts them all alike; each figure is then the median of its runs.
    for run in range(args.runs):
        if args.only in (None, "echo"):
            for workers in (1, 2):
                runs.append(bench_echo(workers, args.connections, args.round_trips))
                show(runs[-1:], f"run {run + 1}")
        if args.only in (None, "chat"):
            for setup in ("in-process", "redis, 1 process", "redis, 2 workers"):
                runs.append(bench_chat(setup, args.members, args.seconds))
                show(runs[-1:], f"run {run + 1}")
    medians = median_by_setup(runs)
    print(f"medians of {args.runs} run(s); load average {os.getloadavg()[0]:.1f}")
    show(medians, "median")
    if args.json is not None:
        document = {"runs": runs, "medians": medians, "load_average": os.getloadavg()[0]}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def median_by_setup(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (workload, server): the median of each figure over the runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in runs:
        groups.setdefault((result["workload"], result["server"]), []).append(result)
    return [
        {
            # Counts (lines said, deliveries) show their smallest: a lost delivery stays visible.
            key: statistics.median(r[key] for r in group)
            if isinstance(value, float)
            else min(r[key] for r in group)
            if isinstance(value, int)
            else value
            for key, value in group[0].items()
        }
        for group in groups.values()
    ]


if __name__ == "__main__":
    main()

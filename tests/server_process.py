"""A server in a subprocess, for the end-to-end tests of the CLI and the example programs.

Its output is read line by line by a thread, so every wait has a timeout and a hung server fails
the test instead of hanging it.
"""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

# Generous: a cold interpreter importing trio on a loaded CI machine can take a few seconds.
TIMEOUT = 20.0


class ServerProcess:
    """``python *args``, started on enter; :meth:`stop` sends SIGINT and collects the output."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = [sys.executable, *args]
        self.lines: list[str] = []  # stdout so far
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.returncode: int | None = None
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        for thread in self._threads:  # they end at EOF, which the exit brings
            thread.join(timeout=TIMEOUT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    @property
    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return "".join(self._stderr)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Read stdout until a line matches *pattern* (``re.search``); return the match."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}") from None
            if line is None:
                raise AssertionError(f"exited before printing {pattern!r}: {self.lines}")
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match

    def port(self) -> int:
        """The port from the banner (the first line that names 127.0.0.1:PORT)."""
        return int(self.wait_for(r"127\.0\.0\.1:(\d+)")[1])

    def stop(self) -> str:
        """Send SIGINT (Ctrl-C), wait for the exit; return the rest of stdout."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self) -> str:
        """Wait for the exit; return the rest of stdout."""
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout=TIMEOUT)
        rest: list[str] = []
        while (line := self._queue.get(timeout=TIMEOUT)) is not None:
            rest.append(line)
        self.lines += rest
        return "\n".join(rest)


def talk(port: int, request: bytes, *, until_eof: bool = True, expect: bytes = b"") -> bytes:
    """Connect to 127.0.0.1:*port*, send *request*, read until EOF (or until *expect* arrived)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        reply = b""
        while until_eof or not reply.endswith(expect):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        return reply


def probe(
    port: int,
    request: bytes,
    expect: bytes,
    stop: threading.Event,
    *,
    host: str = "127.0.0.1",
    interval: float = 0.02,
) -> list[float]:
    """A healthy client, in a thread of its own (run it with ``trio.to_thread.run_sync``): until
    *stop* is set, connect, send *request*, read until *expect* arrived (or EOF), check that the
    reply starts with it, close; return how long each exchange took, in seconds.

    A thread with blocking sockets, not a task: a task would wait its turn behind the test's own
    busy tasks (the load it generates), and measure the test instead of the server.
    """
    times: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < len(expect) and (data := sock.recv(65536)):
                reply += data
        assert reply.startswith(expect), reply[:200]
        times.append(time.perf_counter() - started)
        stop.wait(interval)
    return times


def probe_in_a_process(port: int, request: bytes, expect: bytes, seconds: float) -> list[float]:
    """:func:`probe` for *seconds*, from a process of its own; how long each exchange took.

    Its own process: not even a thread of the test's, whose load generator holds the GIL.
    """
    done = subprocess.run(
        [sys.executable, __file__, str(port), request.hex(), expect.hex(), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + TIMEOUT,
        check=True,
    )
    return [float(line) for line in done.stdout.split()]


if __name__ == "__main__":  # the probe process
    _port, _request, _expect, _seconds = sys.argv[1:]
    _stop = threading.Event()
    threading.Timer(float(_seconds), _stop.set).start()
    for _took in probe(int(_port), bytes.fromhex(_request), bytes.fromhex(_expect), _stop):
        print(_took)

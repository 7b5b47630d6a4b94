"""A real ``redis-server`` for the tests, on a free loopback port, that a test can restart.

Skips (with the reason) only where the binary is missing: ``.ci/run`` installs it with
``apt-get install -y redis-server``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HOST = "127.0.0.1"
# A cold redis-server starts in a few milliseconds; a loaded CI machine gets ample margin.
START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nobody listens on right now (redis-server cannot be told to pick one)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` on 127.0.0.1:*port*, without persistence: a restart forgets everything."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://{HOST}:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.01)

    def answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis vanishes without a goodbye, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)
            self.proc = None

    def command(self, *words: str) -> bytes:
        """Send one command; the first line of the reply."""
        request = b"*%d\r\n" % len(words)
        for word in words:
            data = word.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection((HOST, self.port), timeout=START_TIMEOUT) as sock:
            sock.sendall(request)
            return sock.makefile("rb").readline()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()

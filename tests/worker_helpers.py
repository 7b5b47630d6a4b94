"""Helpers for the tests that run worker processes on one port (SO_REUSEPORT)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server_process import TIMEOUT, ServerProcess

HOST = "127.0.0.1"


@contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held for the body by a bound, non-listening SO_REUSEPORT socket.

    Workers that set SO_REUSEPORT can listen on it beside this socket; nobody else can bind it,
    and no connection is ever queued on this one (only listening sockets get connections).
    """
    with socket.socket() as placeholder:
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((HOST, 0))
        port: int = placeholder.getsockname()[1]
        yield port


def wait_for_stderr(server: ServerProcess, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
    """Poll the server's error output (where logging goes) until *pattern* appears in it."""
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, server.stderr)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the error output:\n{server.stderr}")
        time.sleep(0.02)
    return match

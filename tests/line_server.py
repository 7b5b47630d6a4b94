"""A line-echo server in a process of its own, for tests that measure the server or load it.

``python tests/line_server.py [options]`` serves on 127.0.0.1 port 0 with serve_tcp's defaults
unless told otherwise, prints ``port N`` on stdout once it listens, and logs the ``trio_chat``
logger to stderr (the tests read both). SIGTERM or SIGINT starts a graceful shutdown; with
``--accounting`` it prints, as JSON lines, how many bytes each connection had been sent (pushed)
when the shutdown started and when it ended, by the peer's port.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

import trio_chat


class Echo(trio_chat.AsyncChat):
    """Echoes every line (``\\n``-terminated) back, as one reply per request."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self._pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        self._pieces.append(b"\n")
        self.push(b"".join(self._pieces))
        self._pieces.clear()


class CountingEcho(Echo):
    """Echo that counts what it pushed, in a registry shared by the server's connections."""

    def __init__(self, stream: trio.abc.Stream, registry: dict[int, CountingEcho]) -> None:
        super().__init__(stream)
        self.pushed = 0
        registry[stream.socket.getpeername()[1]] = self  # type: ignore[attr-defined]

    def push(self, data: bytes | bytearray | memoryview) -> None:
        super().push(data)
        self.pushed += len(data)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-timeout", type=float)
    parser.add_argument("--frame-timeout", type=float)
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--grace-period", type=float)
    parser.add_argument("--nofile", type=int, help="raise the open-file limit to this first")
    parser.add_argument("--accounting", action="store_true")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    for name in ("idle_timeout", "frame_timeout", "max_connections", "grace_period"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    registry: dict[int, CountingEcho] = {}
    factory = partial(CountingEcho, registry=registry) if args.accounting else Echo
    shutdown = trio.Event()

    def report(when: str) -> None:
        pushed = {port: handler.pushed for port, handler in registry.items()}
        print(json.dumps({"when": when, "pushed": pushed}), flush=True)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            serve = partial(
                trio_chat.serve_tcp, factory, 0, host="127.0.0.1", shutdown_event=shutdown
            )
            listeners = await nursery.start(partial(serve, **options))
            print("port", listeners[0].socket.getsockname()[1], flush=True)
            async for _ in signals:
                if args.accounting:
                    report("shutdown")
                shutdown.set()
                break
    if args.accounting:
        report("end")


if __name__ == "__main__":
    arguments = parse_args(None)
    if arguments.nofile:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(arguments.nofile, hard), hard))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    trio.run(main, arguments)

"""A line-echo server in a process of its own, for tests that measure the server's memory.

``python tests/line_server.py`` serves on 127.0.0.1 port 0, prints ``port N`` on stdout once it
listens, and logs the ``trio_chat`` logger to stderr (the tests read both). It stops on SIGTERM
or SIGINT with a graceful shutdown.
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial

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


async def main() -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio_chat.serve_tcp, Echo, 0, host="127.0.0.1", shutdown_event=shutdown)
            )
            print("port", listeners[0].socket.getsockname()[1], flush=True)
            async for _ in signals:
                shutdown.set()
                break


if __name__ == "__main__":
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    trio.run(main)

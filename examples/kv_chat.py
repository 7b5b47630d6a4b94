r"""A tiny key-value store over a line protocol, written as an ``AsyncChat`` subclass.

This is the *callback* style: the handler is told about incoming bytes and terminators, and
replies with ``push()``. ``kv_framed.py`` implements the same protocol in the *pull* style with
``FramedStream``; ``tests/test_examples_kv.py`` runs one test suite against both.

The protocol, one command per line (ended by ``\r\n`` or ``\n``), one reply line each
(ended by ``\r\n``)::

    SET key value   ->  OK               the value is the rest of the line (spaces allowed)
    GET key         ->  VALUE value      or NOT_FOUND
    DEL key         ->  DELETED          or NOT_FOUND
    QUIT            ->  BYE              and the server closes the connection
    anything else   ->  ERR reason

A line longer than ``MAX_LINE`` bytes closes the connection (``FrameTooLongError``).

Try it::

    python examples/kv_chat.py 8765        # then: nc 127.0.0.1 8765
"""

from __future__ import annotations

import functools
import sys
from typing import Final

import trio

import trio_chat

#: Commands are short: 1 KiB is plenty for a key and a value, and keeps what a peer that never
#: ends its line can make the server hold small.
MAX_LINE: Final = 1024

#: telnet sends ``\r\n``, ``nc`` sends ``\n``: accept both. A tuple terminator ends the line at
#: whichever comes first, and prefers ``\r\n`` when both start at the same place.
LINE_ENDINGS: Final = (b"\r\n", b"\n")


def execute(store: dict[bytes, bytes], line: bytes) -> tuple[bytes, bool]:
    """Run one command against *store*; return the reply line and whether to hang up.

    Pure (no I/O), so the protocol's meaning is in one place and easy to test.
    """
    command, _, rest = line.strip().partition(b" ")
    command = command.upper()
    if command == b"SET":
        key, _, value = rest.partition(b" ")
        if not key or not value:
            return b"ERR usage: SET key value\r\n", False
        store[key] = value
        return b"OK\r\n", False
    if command in (b"GET", b"DEL"):
        key = rest.strip()
        if not key or b" " in key:
            return b"ERR usage: " + command + b" key\r\n", False
        if key not in store:
            return b"NOT_FOUND\r\n", False
        if command == b"GET":
            return b"VALUE " + store[key] + b"\r\n", False
        del store[key]
        return b"DELETED\r\n", False
    if command == b"QUIT":
        return b"BYE\r\n", True
    if not command:
        return b"ERR empty line\r\n", False
    return b"ERR unknown command " + command[:32] + b"\r\n", False


class KVChat(trio_chat.AsyncChat):
    """One connection of the key-value server.

    Args:
        stream: the connection (or give it to :meth:`run`).
        store: the shared store; every connection of one server gets the same dict.
    """

    # Read by AsyncChat when the handler is created and by set_terminator().
    max_frame_size = MAX_LINE

    def __init__(
        self, stream: trio.abc.Stream | None = None, *, store: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(stream)
        self.store: dict[bytes, bytes] = {} if store is None else store
        # A line may arrive in several pieces (one per read): collect them until the terminator.
        self._pieces: list[bytes] = []
        self.set_terminator(LINE_ENDINGS)

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self._pieces)
        self._pieces.clear()
        reply, hang_up = execute(self.store, line)
        self.push(reply)  # never blocks: queued for the send loop
        if hang_up:
            # Send the BYE first, then close; input after QUIT is not processed.
            self.close_when_done()


async def main(port: int) -> None:
    store: dict[bytes, bytes] = {}
    # trio_chat.serve_tcp logs a failing connection (say, a line over MAX_LINE) and goes on.
    await trio_chat.serve_tcp(functools.partial(KVChat, store=store), port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8765)

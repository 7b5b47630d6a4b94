"""Tutorial step 3: a line protocol. A key-value store that all clients share.

    python examples/tutorial/step3_protocol.py --port 7000
    nc 127.0.0.1 7000

Commands, one per line: ``SET key value``, ``GET key``, ``KEYS``, ``QUIT``.
"""

from __future__ import annotations

from functools import partial

import trio
from run_server import main

import trio_chat

HELP = b"commands: SET key value, GET key, KEYS, QUIT"


class KeyValue(trio_chat.AsyncChat):
    """One client's session with the shared *store*."""

    def __init__(self, stream: trio.abc.Stream, store: dict[bytes, bytes]) -> None:
        super().__init__(stream)
        self.store = store
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []

    def handle_connect(self) -> None:
        self.reply(b"HELLO " + HELP)

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces).removesuffix(b"\r")
        self.pieces.clear()
        command, _, rest = line.partition(b" ")
        command = command.upper()
        if command == b"SET" and b" " in rest:
            key, _, value = rest.partition(b" ")
            self.store[key] = value
            self.reply(b"OK")
        elif command == b"GET" and rest:
            stored = self.store.get(rest)
            self.reply(b"NOT FOUND" if stored is None else b"VALUE " + stored)
        elif command == b"KEYS" and not rest:
            self.reply(b" ".join([b"KEYS", *sorted(self.store)]))
        elif command == b"QUIT" and not rest:
            self.reply(b"BYE")
            self.close_when_done()  # send BYE, then close; later input is not processed
        else:
            self.reply(b"ERROR " + HELP)

    def reply(self, line: bytes) -> None:
        self.push(line + b"\r\n")


if __name__ == "__main__":
    # One dict for the whole server: each connection's handler gets the same one.
    main(partial(KeyValue, store={}), "Tutorial step 3: a shared key-value store.")

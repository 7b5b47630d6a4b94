"""Tutorial step 4: hooks that wait, and replies that are produced as the client reads.

    python examples/tutorial/step4_async.py --port 7000
    nc 127.0.0.1 7000

Commands, one per line: ``SLEEP seconds``, ``COUNT n``, ``QUIT``.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio
from run_server import main

import trio_chat


def numbers(n: int) -> Iterator[bytes]:
    """The lines ``1`` to ``n``, made one at a time, when the send loop asks for the next."""
    for i in range(1, n + 1):
        yield b"%d\r\n" % i


class Waiter(trio_chat.AsyncChat):
    """Answers SLEEP after sleeping, and COUNT with a stream of numbers."""

    # Close the connection of a client that sends nothing for a minute.
    idle_timeout = 60.0

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    async def found_terminator(self) -> None:
        # An async hook: while it awaits, this connection reads nothing more (lines the client
        # sent meanwhile wait their turn), and every other connection carries on.
        words = b"".join(self.pieces).split()
        self.pieces.clear()
        if len(words) == 2 and words[0].upper() == b"SLEEP" and words[1].isdigit():
            await trio.sleep(int(words[1]))
            self.push(b"AWAKE\r\n")
        elif len(words) == 2 and words[0].upper() == b"COUNT" and words[1].isdigit():
            # A producer: pulled only after the previous write finished, so a million lines
            # to a slow client never sit in memory at once.
            self.push_with_producer(numbers(int(words[1])))
        elif words == [b"QUIT"]:
            self.push(b"BYE\r\n")
            self.close_when_done()
        else:
            self.push(b"ERROR commands: SLEEP seconds, COUNT n, QUIT\r\n")


if __name__ == "__main__":
    main(Waiter, "Tutorial step 4: async hooks and producers.")

"""Tutorial step 2: a line server. Each line a client sends comes back in capitals.

python examples/tutorial/step2_lines.py --port 7000
nc 127.0.0.1 7000
"""

from __future__ import annotations

import trio
from run_server import main

import trio_chat


class Upper(trio_chat.AsyncChat):
    """Answers each line with the same line in capitals."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        # A piece of the current line: a line may arrive in several reads, or one read may
        # hold several lines. Keep the pieces until the terminator says the line is complete.
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces).removesuffix(b"\r")  # nc -C and telnet end lines with \r\n
        self.pieces.clear()
        self.push(line.upper() + b"\n")


if __name__ == "__main__":
    main(Upper, "Tutorial step 2: a line server.")

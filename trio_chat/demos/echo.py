"""A line echo server: the smallest useful AsyncChat (``python -m trio_chat echo``)."""

from __future__ import annotations

from typing import Final

import trio

from trio_chat import AsyncChat

__all__ = ["EchoHandler"]

# A line may take this long from its first byte to its newline (frame_timeout): a person typing
# into nc sends whole lines, so only a peer that trickles bytes to hold the connection is cut.
LINE_TIMEOUT: Final = 30.0
# A peer that sends nothing (or stops reading its echoes) for five minutes is disconnected.
IDLE_TIMEOUT: Final = 300.0


class EchoHandler(AsyncChat):
    """Echoes every line (terminated by ``\\n``) back to the peer."""

    idle_timeout: float | None = IDLE_TIMEOUT
    frame_timeout: float | None = LINE_TIMEOUT

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self._pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        self._pieces.append(b"\n")
        self.push(b"".join(self._pieces))
        self._pieces.clear()

"""The demo handlers behind ``python -m trio_chat`` (the CLI layer: nothing imports this)."""

from __future__ import annotations

from ._chat import AsyncChat


class EchoHandler(AsyncChat):
    """Echoes every line (terminated by ``\\n``) back to the peer."""

    def __init__(self, stream: object = None) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.set_terminator(b"\n")
        self._pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self._pieces)
        self._pieces.clear()
        self.push(line + b"\n")

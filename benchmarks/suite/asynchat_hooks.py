"""The asynchat-style handler code, shared word for word by the asynchat and trio_chat servers.

``collect_incoming_data`` appends the piece to a list, ``found_terminator`` joins the list into
the frame: the idiom of the asynchat documentation and of most asynchat code in the wild. Each
server mixes one of these classes in front of its chat class (``asynchat.async_chat`` or
``trio_chat.AsyncChat``) and calls :meth:`setup` from its constructor, so the per-frame Python
code that runs is the same for both and the difference is the framework underneath.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from suite_common import report

if TYPE_CHECKING:
    from trio_chat import Terminator


class ChatHooks:
    """Counters and the end-of-input report; the subclasses are the per-workload handlers."""

    frames: int
    payload_bytes: int
    pieces: list[bytes]

    if TYPE_CHECKING:
        # Provided by the chat class this is mixed into (declared for the type checker only:
        # defined here at run time they would shadow the real ones).
        def push(self, data: bytes | bytearray | memoryview) -> None: ...
        def set_terminator(self, term: Terminator) -> None: ...

    def setup(self) -> None:
        self.frames = 0
        self.payload_bytes = 0
        self.pieces = []

    def report(self) -> bytes:
        return report(self.frames, self.payload_bytes)


class SinkHooks(ChatHooks):
    """W0: no terminator, count the bytes."""

    def setup(self) -> None:
        super().setup()
        self.set_terminator(None)

    def collect_incoming_data(self, data: bytes) -> None:
        self.frames += 1
        self.payload_bytes += len(data)

    def found_terminator(self) -> None:
        raise AssertionError("no terminator is set, so none can be found")


class LineHooks(ChatHooks):
    """W1/W2: count the lines."""

    def setup(self) -> None:
        super().setup()
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.frames += 1
        self.payload_bytes += len(line)


class EchoHooks(LineHooks):
    """W4/W5/W6: send every line back."""

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.frames += 1
        self.payload_bytes += len(line)
        self.push(line + b"\n")


class MessageHooks(ChatHooks):
    """W3: a ``b"%d\\n"`` header line, then that many bytes (a count terminator)."""

    in_header: bool

    def setup(self) -> None:
        super().setup()
        self.in_header = True
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        data = b"".join(self.pieces)
        self.pieces.clear()
        if self.in_header:
            self.in_header = False
            self.set_terminator(int(data))
        else:
            self.frames += 1
            self.payload_bytes += len(data)
            self.in_header = True
            self.set_terminator(b"\n")


HOOKS: Final[dict[str, type[ChatHooks]]] = {
    "sink": SinkHooks,
    "lines": LineHooks,
    "framed": MessageHooks,
    "echo": EchoHooks,
}

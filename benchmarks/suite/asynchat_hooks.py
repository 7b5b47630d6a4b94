"""The asynchat-style handler code, shared word for word by the asynchat and trio_chat servers.

``collect_incoming_data`` appends the piece to a list, ``found_terminator`` joins the list into
the frame: the idiom of the asynchat documentation and of most asynchat code in the wild. Each
server mixes one of these classes in front of its chat class (``asynchat.async_chat`` or
``trio_chat.AsyncChat``) and calls :meth:`setup` from its constructor, so the per-frame Python
code that runs is the same for both and the difference is the framework underneath.

The protocol handlers (:class:`RespHooks`, :class:`HttpHooks`, :class:`SmtpHooks`) are written
the way the trio_chat docs teach: a bytes terminator for what ends with a delimiter
(``b"\\r\\n"``, ``b"\\r\\n\\r\\n"``, ``b"\\r\\n.\\r\\n"``), an int terminator for what comes
with a length, and the rules and replies of ``protocols.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from protocols import (
    GREETING,
    MAX_COMMAND,
    MAX_HEAD,
    MAX_INLINE,
    MAX_MESSAGE,
    HttpError,
    HttpRequest,
    RespError,
    RespStore,
    SmtpSession,
    array_length,
    bulk_length,
    bulk_payload,
    parse_head,
    respond,
)
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
        def close_when_done(self) -> None: ...

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


class RespHooks(ChatHooks):
    """RESP: ``b"\\r\\n"`` for inline commands and the ``*N`` / ``$len`` headers, then an int
    terminator of ``len + 2`` for each bulk string with its ``b"\\r\\n"``."""

    #: One store per server process, shared by its connections (as in every RESP server here).
    store: ClassVar[RespStore] = RespStore()
    #: The terminator for header lines; trio_chat's AsyncChat limits such a frame to
    #: ``max_frame_size`` (asynchat has no limit).
    max_frame_size: int | None = MAX_INLINE

    args: list[bytes]
    remaining: int  # bulk strings still to come in the current array command
    in_bulk: bool  # the current frame is a bulk string (a count terminator)

    def setup(self) -> None:
        super().setup()
        self.args = []
        self.remaining = 0
        self.in_bulk = False
        self.set_terminator(b"\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        frame = b"".join(self.pieces)
        self.pieces.clear()
        try:
            if self.in_bulk:
                self.in_bulk = False
                self.args.append(bulk_payload(frame))
                self.set_terminator(b"\r\n")
                self.remaining -= 1
                if not self.remaining:
                    args, self.args = self.args, []
                    self.push(self.store.execute(args))
            elif self.remaining:
                self.in_bulk = True
                self.set_terminator(bulk_length(frame) + 2)
            elif frame[:1] == b"*":
                self.remaining = max(0, array_length(frame))
            elif args := frame.split():
                self.push(self.store.execute(args))
        except RespError as exc:
            self.push(exc.reply)
            self.close_when_done()


class HttpHooks(ChatHooks):
    """HTTP/1.1: ``b"\\r\\n\\r\\n"`` ends the head, an int terminator reads a Content-Length
    body; keep-alive."""

    #: The longest request head (trio_chat's AsyncChat; asynchat has no limit).
    max_frame_size: int | None = MAX_HEAD
    request: HttpRequest | None  # the request whose body is being read

    def setup(self) -> None:
        super().setup()
        self.request = None
        self.set_terminator(b"\r\n\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        data = b"".join(self.pieces)
        self.pieces.clear()
        request = self.request
        if request is None:
            try:
                request = parse_head(data)
            except HttpError as exc:
                self.push(exc.response)
                self.close_when_done()
                return
            if request.content_length:
                self.request = request
                self.set_terminator(request.content_length)
                return
            data = b""
        else:
            self.request = None
            self.set_terminator(b"\r\n\r\n")
        self.push(respond(request, data))
        if not request.keep_alive:
            self.close_when_done()


class SmtpHooks(ChatHooks):
    """SMTP: ``b"\\r\\n"`` for commands, ``b"\\r\\n.\\r\\n"`` for a message after DATA; the
    greeting is pushed at once."""

    max_frame_size: int | None = MAX_COMMAND
    session: SmtpSession

    def setup(self) -> None:
        super().setup()
        self.session = SmtpSession()
        self.set_terminator(b"\r\n")
        self.push(GREETING)

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        data = b"".join(self.pieces)
        self.pieces.clear()
        session = self.session
        if session.in_data:
            self.push(session.message(data))
            self.max_frame_size = MAX_COMMAND  # read by set_terminator()
            self.set_terminator(b"\r\n")
            return
        self.push(session.command(data))
        if session.in_data:
            self.max_frame_size = MAX_MESSAGE
            self.set_terminator(b"\r\n.\r\n")
        elif session.closing:
            self.close_when_done()


HOOKS: Final[dict[str, type[ChatHooks]]] = {
    "sink": SinkHooks,
    "lines": LineHooks,
    "framed": MessageHooks,
    "echo": EchoHooks,
    "resp": RespHooks,
    "http": HttpHooks,
    "smtp": SmtpHooks,
}

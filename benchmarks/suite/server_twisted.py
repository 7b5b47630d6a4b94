"""Twisted: ``LineReceiver.lineReceived``; for messages, ``LineReceiver`` + ``setRawMode``.

The protocol workloads are ``LineReceiver`` too: ``lineReceived`` for every line or head (its
``delimiter`` set to ``b"\\r\\n"``, ``b"\\r\\n\\r\\n"`` or, for an SMTP message,
``b"\\r\\n.\\r\\n"``), ``setRawMode`` and ``rawDataReceived`` for every counted part,
``transport.write`` for every reply (Twisted joins them into one write per reactor turn).
"""

from __future__ import annotations

from typing import Any, Final

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
from suite_common import BACKLOG, HOST, MAX_LINE, announce, report, server_args, skip

try:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor as _reactor
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.basic import LineReceiver
    from zope.interface import implementer
except ImportError:  # pragma: no cover - Twisted is optional
    skip("Twisted is not installed (`pip install twisted`)")

# Any: the reactor module object is typed as a module, its methods are installed at run time.
reactor: Any = _reactor


@implementer(IHalfCloseableProtocol)
class Reporting(Protocol):
    """Answers EOF (a half-close) with the report, then closes."""

    frames = 0
    payload_bytes = 0

    def readConnectionLost(self) -> None:  # noqa: N802 - Twisted's name
        # Any: Twisted types transports as zope interfaces, which mypy cannot call.
        transport: Any = self.transport
        transport.write(report(self.frames, self.payload_bytes))
        transport.loseConnection()

    def writeConnectionLost(self) -> None:  # noqa: N802 - Twisted's name
        pass


class Sink(Reporting):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.frames += 1
        self.payload_bytes += len(data)


class Lines(Reporting, LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        self.frames += 1
        self.payload_bytes += len(line)


class Echo(Lines):
    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        self.frames += 1
        self.payload_bytes += len(line)
        self.sendLine(line)


class Messages(Reporting, LineReceiver):
    """A header line, then raw mode until the payload is complete (the rest goes back to lines)."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    need = 0

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pieces: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        self.need = int(line)
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        need = self.need
        if len(data) < need:
            self.pieces.append(data)
            self.need = need - len(data)
            return
        self.pieces.append(data[:need] if len(data) > need else data)
        message = b"".join(self.pieces)
        self.pieces.clear()
        self.frames += 1
        self.payload_bytes += len(message)
        self.setLineMode(data[need:])


class Counted(LineReceiver):
    """Lines, and parts of a known length in raw mode (:meth:`read_counted`)."""

    need = 0

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pieces: list[bytes] = []
        # Any: Twisted types transports as zope interfaces, which mypy cannot call.
        self.out: Any = self.transport

    def read_counted(self, n: int) -> None:
        self.need = n
        self.setRawMode()

    def counted_received(self, data: bytes) -> None:
        raise NotImplementedError

    def rawDataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        need = self.need
        if len(data) < need:
            self.pieces.append(data)
            self.need = need - len(data)
            return
        self.pieces.append(data[:need] if len(data) > need else data)
        part = b"".join(self.pieces)
        self.pieces.clear()
        self.setLineMode()  # first: counted_received() may switch to raw mode again
        self.counted_received(part)
        if data[need:]:
            self.dataReceived(data[need:])


STORE: Final = RespStore()


class Resp(Counted):
    delimiter = b"\r\n"
    MAX_LENGTH = MAX_INLINE
    remaining = 0

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        super().connectionMade()
        self.args: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        try:
            if self.remaining:
                self.read_counted(bulk_length(line) + 2)
            elif line[:1] == b"*":
                self.remaining = max(0, array_length(line))
            elif args := line.split():
                self.out.write(STORE.execute(args))
        except RespError as exc:
            self.out.write(exc.reply)
            self.out.loseConnection()

    def counted_received(self, data: bytes) -> None:
        try:
            self.args.append(bulk_payload(data))
        except RespError as exc:
            self.out.write(exc.reply)
            self.out.loseConnection()
            return
        self.remaining -= 1
        if not self.remaining:
            args, self.args = self.args, []
            self.out.write(STORE.execute(args))


class Http(Counted):
    delimiter = b"\r\n\r\n"
    MAX_LENGTH = MAX_HEAD
    request: HttpRequest | None = None

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        try:
            request = parse_head(line)
        except HttpError as exc:
            self.out.write(exc.response)
            self.out.loseConnection()
            return
        if request.content_length:
            self.request = request
            self.read_counted(request.content_length)
        else:
            self.answer(request, b"")

    def counted_received(self, data: bytes) -> None:
        request, self.request = self.request, None
        assert request is not None
        self.answer(request, data)

    def answer(self, request: HttpRequest, body: bytes) -> None:
        self.out.write(respond(request, body))
        if not request.keep_alive:
            self.out.loseConnection()


class Smtp(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = MAX_COMMAND

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.session = SmtpSession()
        # Any: Twisted types transports as zope interfaces, which mypy cannot call.
        self.out: Any = self.transport
        self.out.write(GREETING)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        session = self.session
        if session.in_data:
            self.out.write(session.message(line))
            self.delimiter, self.MAX_LENGTH = b"\r\n", MAX_COMMAND
            return
        self.out.write(session.command(line))
        if session.in_data:
            # LineReceiver reads the delimiter afresh for every line it splits off.
            self.delimiter, self.MAX_LENGTH = b"\r\n.\r\n", MAX_MESSAGE
        elif session.closing:
            self.out.loseConnection()


PROTOCOLS: Final[dict[str, type[Protocol]]] = {
    "sink": Sink,
    "lines": Lines,
    "framed": Messages,
    "echo": Echo,
    "resp": Resp,
    "http": Http,
    "smtp": Smtp,
}


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    factory = Factory.forProtocol(PROTOCOLS[args.mode])
    port = reactor.listenTCP(args.port, factory, backlog=BACKLOG, interface=HOST)
    announce(port.getHost().port)
    reactor.run()  # stops on SIGINT


if __name__ == "__main__":
    main()

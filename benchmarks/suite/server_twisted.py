"""Twisted: ``LineReceiver.lineReceived``; for messages, ``LineReceiver`` + ``setRawMode``."""

from __future__ import annotations

from typing import Any, Final

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


PROTOCOLS: Final[dict[str, type[Protocol]]] = {
    "sink": Sink,
    "lines": Lines,
    "framed": Messages,
    "echo": Echo,
}


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    factory = Factory.forProtocol(PROTOCOLS[args.mode])
    port = reactor.listenTCP(0, factory, backlog=BACKLOG, interface=HOST)
    announce(port.getHost().port)
    reactor.run()  # stops on SIGINT


if __name__ == "__main__":
    main()

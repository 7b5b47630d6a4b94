"""Helpers shared by the serving, client and example tests: servers on loopback, line readers,
TLS contexts from trustme, and handlers that record what they saw."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing
import trustme

import trio_chat

HOST = "127.0.0.1"


async def start_server(
    nursery: trio.Nursery,
    factory: trio_chat.HandlerFactory | trio_chat.StreamHandler,
    **options: Any,
) -> int:
    """Start ``serve_tcp`` on 127.0.0.1, port 0, in *nursery*; return the port it picked."""
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio_chat.serve_tcp, factory, 0, host=HOST, **options)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream(HOST, port)


def local_name(stream: trio.SocketStream) -> str:
    """``host:port`` of the client end, as the server's log messages name this peer."""
    host, port = stream.socket.getsockname()[:2]
    return f"{host}:{port}"


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing *stream* send a TCP reset instead of a FIN (SO_LINGER with a zero timeout)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class LineReader:
    """Reads ``\\n``-terminated lines from a stream (a client's view of a line server)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def line(self) -> bytes:
        """The next line, with its ``\\n``; ``b""`` at EOF (and what is left of a last line)."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            data = await self.stream.receive_some()
            if not data:
                rest = bytes(self.buffer)
                self.buffer.clear()
                return rest
            self.buffer += data

    async def rest(self) -> bytes:
        """Everything until EOF."""
        while data := await self.stream.receive_some():
            self.buffer += data
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


async def round_trip(stream: trio.abc.Stream, reader: LineReader, line: bytes) -> bytes:
    await stream.send_all(line)
    return await reader.line()


class Greeter(trio_chat.AsyncChat):
    """Says ``hi`` on connect, then echoes lines; every instance is recorded in *seen*."""

    def __init__(self, stream: trio.abc.Stream, seen: list[Greeter] | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []
        if seen is not None:
            seen.append(self)

    def handle_connect(self) -> None:
        self.push(b"hi\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        self.pieces.append(b"\n")
        self.push(b"".join(self.pieces))
        self.pieces.clear()


@attrs.frozen
class TLS:
    """A throwaway CA, a server context with a certificate for ``localhost`` and 127.0.0.1, and
    client contexts that trust it (``client``) or do not (``untrusting``)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    untrusting: ssl.SSLContext


@functools.cache
def tls() -> TLS:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)
    return TLS(server=server, client=client, untrusting=untrusting)


class Records(logging.Handler):
    """Collects the records of one logger (usable where pytest's caplog is not: hypothesis)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def capture_logs(name: str = "trio_chat") -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger(name)
    handler = Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class FakeSocket:
    """What serving asks of a socket: its peer's address (and whether it is closed)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.closed = False

    def getpeername(self) -> tuple[str, int]:
        return self.address

    def fileno(self) -> int:
        return -1 if self.closed else 3


class AddressedStream(trio.abc.HalfCloseableStream):
    """A memory stream that reports a peer address, as a socket stream does."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, address: tuple[str, int]) -> None:
        self.inner = inner
        self.socket = FakeSocket(address)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.socket.closed = True
        await self.inner.aclose()


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the server ends of memory stream pairs; ``accept()`` may raise scripted errors."""

    def __init__(self, errors: list[OSError] | None = None) -> None:
        self.send, self.receive = trio.open_memory_channel[trio.abc.Stream](1000)
        self.errors = errors or []
        self.closed = False

    async def connect(self, address: tuple[str, int] = ("10.0.0.1", 1)) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self.send.send(AddressedStream(server, address))
        return client

    async def accept(self) -> trio.abc.Stream:
        if self.errors:
            await trio.lowlevel.checkpoint()
            raise self.errors.pop(0)
        return await self.receive.receive()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()

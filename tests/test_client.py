"""connect_tcp: the client side, over real loopback sockets, plain and TLS."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
from serving_helpers import HOST, Greeter, start_server, tls

import trio_chat
from trio_chat import AsyncChat, connect_tcp

TIMEOUT = 10  # seconds, for a whole test


class Client(AsyncChat):
    """Collects reply lines; ``bye`` (or the peer's EOF) ends the conversation."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []
        self.lines: list[bytes] = []
        self.got_line = trio.Event()

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.lines.append(line)
        self.got_line.set()
        self.got_line = trio.Event()
        if line == b"bye":
            self.close()


async def test_started_hands_over_the_running_handler() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, Greeter)
            client: Client = await nursery.start(connect_tcp, Client, HOST, port)
            assert isinstance(client, Client)
            client.push(b"one\ntwo\nbye\n")
            while not client.closed:
                await client.got_line.wait()
            nursery.cancel_scope.cancel()
    assert client.lines == [b"hi", b"one", b"two", b"bye"]


async def test_awaited_directly_it_returns_the_handler_after_the_close() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, Greeter)
            client = Client()
            client.push(b"bye\n")  # queued before the connection exists
            returned = await connect_tcp(client, HOST, port)
            nursery.cancel_scope.cancel()
    assert returned is client
    assert client.lines == [b"hi", b"bye"]


@pytest.mark.parametrize("server_hostname", [None, "localhost"])
async def test_tls(server_hostname: str | None) -> None:
    contexts = tls()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, Greeter, ssl_context=contexts.server)
            client = Client()
            client.push(b"secret\nbye\n")
            await connect_tcp(
                client, HOST, port, ssl_context=contexts.client, server_hostname=server_hostname
            )
            nursery.cancel_scope.cancel()
    assert isinstance(client.stream, trio.SSLStream)
    assert client.lines == [b"hi", b"secret", b"bye"]


async def test_tls_certificate_that_does_not_verify() -> None:
    contexts = tls()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, Greeter, ssl_context=contexts.server)
            made: list[Client] = []

            def factory(stream: trio.abc.Stream) -> Client:
                made.append(Client(stream))
                return made[-1]

            with pytest.raises(trio.BrokenResourceError) as caught:
                await nursery.start(
                    partial(connect_tcp, factory, HOST, port, ssl_context=contexts.untrusting)
                )
            nursery.cancel_scope.cancel()
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert made == []  # the handler is made only after a successful handshake


async def test_connection_refused() -> None:
    with trio.fail_after(TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()  # a port nobody listens on
        with pytest.raises(OSError):
            await connect_tcp(Client, HOST, port)


class Crashing(Client):
    def found_terminator(self) -> None:
        raise RuntimeError("client hook failed")


async def test_handler_exceptions_propagate_on_the_client_side() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, Greeter)
            with pytest.raises(RuntimeError, match="client hook failed"):
                await connect_tcp(Crashing, HOST, port)
            nursery.cancel_scope.cancel()


def test_public() -> None:
    assert trio_chat.connect_tcp is connect_tcp
    assert connect_tcp.__module__ == "trio_chat"

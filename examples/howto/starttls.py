r"""STARTTLS: a line protocol that starts in plaintext and upgrades to TLS on a command.

A cut-down SMTP-like dialogue, lines ended by ``\r\n``::

    STARTTLS        ->  220 ready to start TLS        then the TLS handshake
    LOGIN name      ->  235 welcome name              over TLS only; in plaintext:
                                                      530 issue STARTTLS first
    QUIT            ->  221 bye                       and the server closes
    anything else   ->  500 unknown command

``StartTLSServer`` is the server side, ``StartTLSClient`` a client that upgrades as soon as it
is connected, then sends its commands. ``tests/test_howto_serving.py`` runs them against each other,
and checks that commands pipelined after ``STARTTLS`` in plaintext are never executed.
Try it with a certificate and its key in PEM files; ``nc`` shows the plaintext part (``-C``
sends ``\r\n``), then the handshake it cannot do times out after 10 seconds::

    python examples/howto/starttls.py server.pem server.key 8587
    nc -C 127.0.0.1 8587                # LOGIN alice, then STARTTLS
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

logger: Final = logging.getLogger("starttls")

# The time a client has to complete the handshake after STARTTLS: serve_tcp's
# tls_handshake_timeout only bounds the handshake of ssl_context, at the start of a connection.
# Ours gets the same 10 seconds (two round trips, with room for a slow network).
HANDSHAKE_TIMEOUT: Final = trio_chat.DEFAULT_TLS_HANDSHAKE_TIMEOUT


class StartTLSServer(trio_chat.AsyncChat):
    """One connection: plaintext until ``STARTTLS``, TLS afterwards.

    Args:
        stream: the connection (or give it to :meth:`run`).
        context: the server's TLS context, for the upgrade.

    Attributes:
        seen: each command this connection executed, and whether it came over TLS.
    """

    # A command line: SMTP's limit (RFC 5321: 512 bytes with the CRLF).
    max_frame_size = 512

    def __init__(self, stream: trio.abc.Stream | None = None, *, context: ssl.SSLContext) -> None:
        super().__init__(stream)
        self.context = context
        self.seen: list[tuple[bytes, bool]] = []
        self._pieces: list[bytes] = []
        self.set_terminator(b"\r\n")

    @property
    def secure(self) -> bool:
        """Whether the connection was upgraded to TLS."""
        return isinstance(self.stream, trio.SSLStream)

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    async def found_terminator(self) -> None:
        command = b"".join(self._pieces)
        self._pieces.clear()
        self.seen.append((command, self.secure))
        verb, _, argument = command.partition(b" ")
        if verb == b"STARTTLS" and not self.secure:
            self.push(b"220 ready to start TLS\r\n")
            # Sends the reply in plaintext, drops whatever the client sent after STARTTLS
            # (it did not come through TLS), then does the handshake. A hook that awaits is
            # bounded by nothing (idle_timeout only bounds waiting for input), so bound it.
            with trio.move_on_after(HANDSHAKE_TIMEOUT) as handshake:
                await self.start_tls(self.context)
            if handshake.cancelled_caught:
                logger.info("closing connection to %s: no TLS handshake after STARTTLS", self.peer)
                self.close()
        elif verb == b"STARTTLS":
            self.push(b"503 already in TLS\r\n")
        elif verb == b"LOGIN" and not self.secure:
            self.push(b"530 issue STARTTLS first\r\n")
        elif verb == b"LOGIN" and argument:
            self.push(b"235 welcome " + argument + b"\r\n")
        elif verb == b"QUIT":
            self.push(b"221 bye\r\n")
            self.close_when_done()
        else:
            self.push(b"500 unknown command\r\n")


class StartTLSClient(trio_chat.AsyncChat):
    """Sends ``STARTTLS``; once upgraded, sends *commands* and ``QUIT``; keeps the replies.

    Args:
        commands: the command lines to send over TLS (without ``\r\n``).
        context: the client's TLS context: which certificates it trusts.
        server_hostname: the name the server's certificate must be valid for.
    """

    def __init__(
        self, commands: list[bytes], *, context: ssl.SSLContext, server_hostname: str
    ) -> None:
        super().__init__()
        self.commands = commands
        self.context = context
        self.server_hostname = server_hostname
        self.replies: list[bytes] = []
        self._pieces: list[bytes] = []
        self.set_terminator(b"\r\n")

    def handle_connect(self) -> None:
        self.push(b"STARTTLS\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    async def found_terminator(self) -> None:
        reply = b"".join(self._pieces)
        self._pieces.clear()
        self.replies.append(reply)
        if len(self.replies) > 1:
            return  # a reply to a command: the server closes after QUIT's
        if not reply.startswith(b"220 "):
            self.close_when_done()  # no TLS, so no commands
            return
        await self.start_tls(self.context, server_side=False, server_hostname=self.server_hostname)
        for command in [*self.commands, b"QUIT"]:
            self.push(command + b"\r\n")


async def login(host: str, port: int, name: bytes, *, context: ssl.SSLContext) -> list[bytes]:
    """Connect in plaintext, upgrade to TLS, log in as *name*, quit; return the replies.

    Raises:
        OSError: the connection could not be opened.
        trio.BrokenResourceError: the TLS handshake failed.
    """
    client = StartTLSClient([b"LOGIN " + name], context=context, server_hostname=host)
    await trio_chat.connect_tcp(client, host, port)  # returns when the connection is closed
    return client.replies


async def main(
    certfile: str,
    keyfile: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``StartTLSServer`` on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            factory = partial(StartTLSServer, context=context)
            serve = partial(trio_chat.serve_tcp, factory, port, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"STARTTLS server on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(f"usage: {sys.argv[0]} CERTFILE KEYFILE [PORT]")
    logging.basicConfig(level=logging.INFO)
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 8587)

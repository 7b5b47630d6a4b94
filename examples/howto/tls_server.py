r"""TLS from the first byte: a line server behind ``serve_tcp(ssl_context=...)``, and a client
that connects with ``connect_tcp(ssl_context=...)``.

The server answers each line (ended by ``\n``) with the line in upper case. Every connection's
TLS handshake completes before the handler is created, so ``Upper`` is the same class it would
be over plain TCP. Try it with a certificate and its key in PEM files
(``tests/test_howto_serving.py`` makes throwaway ones with trustme)::

    python examples/howto/tls_server.py server.pem server.key 8443
    openssl s_client -quiet -connect 127.0.0.1:8443   # type a line: it comes back upper-cased
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys

import trio

import trio_chat


class Upper(trio_chat.AsyncChat):
    """Answers each line with the line in upper case."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self._pieces: list[bytes] = []
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        self.push(b"".join(self._pieces).upper() + b"\n")
        self._pieces.clear()


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server's TLS context: the defaults Python recommends, and our certificate.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the files do not hold a certificate and its private key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


async def serve_tls(
    context: ssl.SSLContext,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``Upper`` over TLS on 127.0.0.1:*port* until cancelled.

    A client whose handshake fails (one that speaks plaintext, or does not trust our
    certificate) or takes longer than ``tls_handshake_timeout`` (10 s) is logged at INFO level
    and closed; the other connections go on.
    """
    await trio_chat.serve_tcp(
        Upper, port, host="127.0.0.1", ssl_context=context, task_status=task_status
    )


class Ask(trio_chat.AsyncChat):
    """A client: sends *lines* once connected, keeps the replies, closes after the last one."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__()
        self.lines = lines
        self.replies: list[bytes] = []
        self._pieces: list[bytes] = []
        self.set_terminator(b"\n")

    def handle_connect(self) -> None:
        if not self.lines:
            self.close_when_done()  # no reply to wait for
        for line in self.lines:
            self.push(line + b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        self.replies.append(b"".join(self._pieces))
        self._pieces.clear()
        if len(self.replies) == len(self.lines):
            self.close_when_done()


async def ask(host: str, port: int, lines: list[bytes], context: ssl.SSLContext) -> list[bytes]:
    """Send *lines* to the server at *host*:*port* over TLS; return its replies.

    *context* decides which certificates the client trusts, e.g.
    :func:`ssl.create_default_context` (the system's certificate authorities); the server's
    certificate must be valid for *host*.

    Raises:
        OSError: the connection could not be opened.
        trio.BrokenResourceError: the TLS handshake failed (the certificate did not verify,
            say: the :class:`ssl.SSLError` is its ``__cause__``).
    """
    # Connects, completes the handshake (checking the certificate against *host*), runs the
    # handler, and returns it when the connection is closed.
    client = await trio_chat.connect_tcp(Ask(lines), host, port, ssl_context=context)
    return client.replies


async def main(
    certfile: str,
    keyfile: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``Upper`` over TLS on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    context = server_context(certfile, keyfile)
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tls, context, port)
            port = listeners[0].socket.getsockname()[1]
            print(f"TLS upper-case server on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(f"usage: {sys.argv[0]} CERTFILE KEYFILE [PORT]")
    logging.basicConfig(level=logging.INFO)
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 8443)

"""The serving how-to's programs (examples/howto/): a server on a Unix socket, TLS from the start,
STARTTLS, and a trio-style handler. Over real sockets: Unix sockets in a temporary directory,
TCP on 127.0.0.1, with certificates from a throwaway trustme CA."""

from __future__ import annotations

import errno
import os
import signal
import socket
import ssl
import stat
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import starttls
import stream_handler
import tls_server
import trio
import trio.testing
import trustme
import unix_socket_server
from server_process import TIMEOUT, ServerProcess
from serving_helpers import HOST, LineReader

import trio_chat
from trio_chat.testing import open_peer

HOWTO = Path(__file__).parent.parent / "examples" / "howto"

unix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


# ---------------------------------------------------------------------------- Unix sockets


@pytest.fixture
def socket_path() -> Iterator[str]:
    # Not pytest's tmp_path: a Unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="trio-chat-") as directory:
        yield os.path.join(directory, "echo.sock")


async def read_line(stream: trio.abc.ReceiveStream, reader: LineReader | None = None) -> bytes:
    return await (reader or LineReader(stream)).line()


@unix_only
async def test_unix_server_greets_echoes_and_removes_its_file(socket_path: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(unix_socket_server.serve_unix, unix_socket_server.Echo, socket_path)
            assert stat.S_ISSOCK(os.lstat(socket_path).st_mode)
            assert stat.S_IMODE(os.lstat(socket_path).st_mode) == 0o600
            async with await trio.open_unix_socket(socket_path) as client:
                reader = LineReader(client)
                greeting = await reader.line()
                if hasattr(socket, "SO_PEERCRED"):
                    assert greeting == b"hello, uid %d\n" % os.getuid()
                else:
                    assert greeting == b"hello\n"
                await client.send_all(b"one\ntwo\n")
                assert await reader.line() == b"one\n"
                assert await reader.line() == b"two\n"
            nursery.cancel_scope.cancel()
    assert not await trio.Path(socket_path).exists()


@unix_only
async def test_unix_server_mode(socket_path: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            serve = partial(unix_socket_server.serve_unix, mode=0o660)
            await nursery.start(serve, unix_socket_server.Echo, socket_path)
            assert stat.S_IMODE(os.lstat(socket_path).st_mode) == 0o660
            nursery.cancel_scope.cancel()


@unix_only
async def test_a_stale_socket_file_is_replaced(socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(socket_path)  # a server that was killed: its file stays, nobody listens
    assert await trio.Path(socket_path).exists()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(unix_socket_server.serve_unix, unix_socket_server.Echo, socket_path)
            async with await trio.open_unix_socket(socket_path) as client:
                assert (await LineReader(client).line()).startswith(b"hello")
            nursery.cancel_scope.cancel()


@unix_only
async def test_a_live_server_is_left_alone(socket_path: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(unix_socket_server.serve_unix, unix_socket_server.Echo, socket_path)
            with pytest.raises(OSError) as refused:
                await unix_socket_server.open_unix_listener(socket_path)
            assert refused.value.errno == errno.EADDRINUSE
            async with await trio.open_unix_socket(socket_path) as client:  # still served
                assert (await LineReader(client).line()).startswith(b"hello")
            nursery.cancel_scope.cancel()


@unix_only
async def test_a_file_that_is_not_a_socket_is_left_alone(socket_path: str) -> None:
    await trio.Path(socket_path).write_text("precious", encoding="utf-8")
    with pytest.raises(FileExistsError):
        await unix_socket_server.open_unix_listener(socket_path)
    assert await trio.Path(socket_path).read_text(encoding="utf-8") == "precious"


@unix_only
async def test_a_replaced_socket_file_is_not_removed(socket_path: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(unix_socket_server.serve_unix, unix_socket_server.Echo, socket_path)
            os.unlink(socket_path)  # another server took the path over
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
                other.bind(socket_path)
                nursery.cancel_scope.cancel()
    assert await trio.Path(socket_path).exists()  # theirs, not ours to remove


async def test_peer_uid_is_none_without_a_unix_socket() -> None:
    assert unix_socket_server.peer_uid(None) is None
    left, _right = trio.testing.memory_stream_pair()
    assert unix_socket_server.peer_uid(left) is None
    with trio.fail_after(5):
        async with open_peer(unix_socket_server.Echo()) as peer:  # in memory: no uid
            assert await peer.receive_until(b"\n") == b"hello"


@unix_only
def test_the_unix_socket_program_runs_and_stops_on_ctrl_c(socket_path: str) -> None:
    with ServerProcess([str(HOWTO / "unix_socket_server.py"), socket_path]) as server:
        server.wait_for("listening on")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(TIMEOUT)
            client.connect(socket_path)
            client.sendall(b"ping\n")
            reply = b""
            while not reply.endswith(b"ping\n"):
                data = client.recv(1024)
                assert data, reply
                reply += data
        assert reply.startswith(b"hello")
        assert server.stop() == "stopped"
    assert server.returncode == 0, server.stderr
    assert not os.path.exists(socket_path)


# ----------------------------------------------------------------------------- TLS


@attrs.frozen
class Certificates:
    """A server certificate for 127.0.0.1 in PEM files, and client contexts that trust its CA
    (``client``) or do not (``untrusting``)."""

    certfile: str
    keyfile: str
    client: ssl.SSLContext
    untrusting: ssl.SSLContext


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", HOST)
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(certfile, append=i > 0)
    issued.private_key_pem.write_to_path(keyfile)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)
    return Certificates(str(certfile), str(keyfile), client, untrusting)


async def test_tls_server_and_client(certificates: Certificates) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                tls_server.main, certificates.certfile, certificates.keyfile, 0
            )
            replies = await tls_server.ask(HOST, port, [b"hello", b"tls"], certificates.client)
            assert replies == [b"HELLO", b"TLS"]
            assert await tls_server.ask(HOST, port, [], certificates.client) == []
            nursery.cancel_scope.cancel()


async def test_tls_server_speaks_tls_only(certificates: Certificates) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                tls_server.main, certificates.certfile, certificates.keyfile, 0
            )
            # A client that does not trust the certificate gives up in the handshake.
            with pytest.raises(trio.BrokenResourceError) as failed:
                await tls_server.ask(HOST, port, [b"hi"], certificates.untrusting)
            assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
            # A plaintext client gets no answer: its connection is closed.
            async with await trio.open_tcp_stream(HOST, port) as plain:
                await plain.send_all(b"hello\n")
                assert await LineReader(plain).rest() == b""
            # And the server goes on.
            assert await tls_server.ask(HOST, port, [b"hi"], certificates.client) == [b"HI"]
            nursery.cancel_scope.cancel()


def test_server_context_refuses_bad_files(certificates: Certificates) -> None:
    with pytest.raises(ssl.SSLError):
        tls_server.server_context(certificates.keyfile, certificates.keyfile)
    with pytest.raises(FileNotFoundError):
        tls_server.server_context(certificates.certfile + ".missing", certificates.keyfile)


# ------------------------------------------------------------------------------ STARTTLS


async def start_starttls_server(
    nursery: trio.Nursery, certificates: Certificates, servers: list[starttls.StartTLSServer]
) -> int:
    """Serve StartTLSServer on a free port; each connection's handler is appended to
    *servers*."""
    context = tls_server.server_context(certificates.certfile, certificates.keyfile)

    def factory(stream: trio.abc.Stream) -> starttls.StartTLSServer:
        servers.append(starttls.StartTLSServer(stream, context=context))
        return servers[-1]

    listeners = await nursery.start(partial(trio_chat.serve_tcp, factory, 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_starttls_client_and_server(certificates: Certificates) -> None:
    servers: list[starttls.StartTLSServer] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_starttls_server(nursery, certificates, servers)
            replies = await starttls.login(HOST, port, b"alice", context=certificates.client)
            nursery.cancel_scope.cancel()
    assert replies == [b"220 ready to start TLS", b"235 welcome alice", b"221 bye"]
    assert servers[0].seen == [(b"STARTTLS", False), (b"LOGIN alice", True), (b"QUIT", True)]


async def test_starttls_main(certificates: Certificates) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                starttls.main, certificates.certfile, certificates.keyfile, 0
            )
            replies = await starttls.login(HOST, port, b"bob", context=certificates.client)
            assert replies == [b"220 ready to start TLS", b"235 welcome bob", b"221 bye"]
            nursery.cancel_scope.cancel()


async def test_starttls_plaintext_commands_and_errors(certificates: Certificates) -> None:
    context = tls_server.server_context(certificates.certfile, certificates.keyfile)
    with trio.fail_after(10):
        async with open_peer(starttls.StartTLSServer(context=context)) as peer:
            await peer.send_all(b"LOGIN alice\r\nHELO\r\nQUIT\r\n")
            assert await peer.receive_all_until_eof() == (
                b"530 issue STARTTLS first\r\n500 unknown command\r\n221 bye\r\n"
            )


async def test_commands_pipelined_after_starttls_are_dropped(certificates: Certificates) -> None:
    servers: list[starttls.StartTLSServer] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_starttls_server(nursery, certificates, servers)
            async with await trio.open_tcp_stream(HOST, port) as plain:
                # An attacker in the middle appends a command to the client's STARTTLS.
                await plain.send_all(b"STARTTLS\r\nLOGIN mallory\r\n")
                assert await LineReader(plain).line() == b"220 ready to start TLS\r\n"
                tls = trio.SSLStream(plain, certificates.client, server_hostname=HOST)
                await tls.do_handshake()
                await tls.send_all(b"STARTTLS\r\nQUIT\r\n")
                assert await LineReader(tls).rest() == b"503 already in TLS\r\n221 bye\r\n"
            nursery.cancel_scope.cancel()
    assert servers[0].seen == [(b"STARTTLS", False), (b"STARTTLS", True), (b"QUIT", True)]


async def test_plaintext_after_starttls_fails_the_handshake(certificates: Certificates) -> None:
    servers: list[starttls.StartTLSServer] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_starttls_server(nursery, certificates, servers)
            async with await trio.open_tcp_stream(HOST, port) as plain:
                reader = LineReader(plain)
                await plain.send_all(b"STARTTLS\r\n")
                assert await reader.line() == b"220 ready to start TLS\r\n"
                await plain.send_all(b"LOGIN mallory\r\n")  # not a TLS ClientHello
                # The handshake fails: the server closes without executing the command.
                assert not (await reader.rest()).startswith((b"235", b"530"))
            nursery.cancel_scope.cancel()
    assert servers[0].seen == [(b"STARTTLS", False)]


async def test_starttls_handshake_timeout(
    certificates: Certificates, autojump_clock: trio.testing.MockClock
) -> None:
    context = tls_server.server_context(certificates.certfile, certificates.keyfile)
    with trio.fail_after(100):
        async with open_peer(starttls.StartTLSServer(context=context)) as peer:
            start = trio.current_time()
            await peer.send_all(b"STARTTLS\r\n")
            assert await peer.receive_until(b"\r\n") == b"220 ready to start TLS"
            assert await peer.receive_all_until_eof() == b""  # no handshake: closed
            assert trio.current_time() - start == pytest.approx(starttls.HANDSHAKE_TIMEOUT)


async def test_a_client_refuses_a_server_without_starttls(certificates: Certificates) -> None:
    async def no_tls(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"502 not implemented\r\n")
        await trio.sleep_forever()

    client = starttls.StartTLSClient(
        [b"LOGIN x"], context=certificates.client, server_hostname=HOST
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, no_tls, 0, host=HOST))
            await trio_chat.connect_tcp(client, HOST, listeners[0].socket.getsockname()[1])
            nursery.cancel_scope.cancel()
    assert client.replies == [b"502 not implemented"]


@pytest.mark.parametrize("program", ["tls_server.py", "starttls.py"])
def test_each_tls_program_runs_and_stops_on_ctrl_c(
    program: str, certificates: Certificates
) -> None:
    args = [str(HOWTO / program), certificates.certfile, certificates.keyfile, "0"]
    with ServerProcess(args) as server:
        port = server.port()
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
            if program == "starttls.py":
                sock.sendall(b"STARTTLS\r\n")
                assert sock.recv(1024) == b"220 ready to start TLS\r\n"
            with certificates.client.wrap_socket(sock, server_hostname=HOST) as tls:
                tls.sendall(b"QUIT\r\n" if program == "starttls.py" else b"quit\n")
                expect = b"221 bye\r\n" if program == "starttls.py" else b"QUIT\n"
                assert tls.recv(1024) == expect
        assert server.stop() == "stopped"
    assert server.returncode == 0, server.stderr


# ------------------------------------------------------------------- a trio-style handler


async def test_a_framed_handler_is_served_and_says_goodbye_at_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shutdown = trio.Event()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(stream_handler.main, 0, shutdown)
            quitter = await trio.open_tcp_stream(HOST, port)
            stayer = await trio.open_tcp_stream(HOST, port)
            readers = LineReader(quitter), LineReader(stayer)
            await quitter.send_all(b"hello\r\nQUIT\r\nignored\n")
            assert await readers[0].line() == b"HELLO\r\n"
            assert await readers[0].rest() == b"BYE\n"  # then the end: not a reset
            await stayer.send_all(b"still here\n")
            assert await readers[1].line() == b"STILL HERE\n"
            shutdown.set()
            assert await readers[1].rest() == b"server shutting down, bye\n"
            for client in quitter, stayer:
                await client.aclose()
        assert trio.current_time() < 1  # main() returned at once, not after the grace period


async def test_a_framed_handler_gets_the_slow_peer_defences(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shutdown = trio.Event()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(stream_handler.main, 0, shutdown)
            async with await trio.open_tcp_stream(HOST, port) as trickler:
                start = trio.current_time()
                with pytest.raises(trio.BrokenResourceError):  # bounded: cut long before
                    for _ in range(100):
                        await trickler.send_all(b"x")  # a byte a second, never a newline
                        await trio.sleep(1)
                assert trio.current_time() - start == pytest.approx(
                    stream_handler.LINE_TIMEOUT, abs=1.5
                )
            async with await trio.open_tcp_stream(HOST, port) as silent:
                start = trio.current_time()
                assert await LineReader(silent).rest() == b""
                assert trio.current_time() - start == pytest.approx(stream_handler.IDLE_TIMEOUT)
            nursery.cancel_scope.cancel()


def test_the_stream_handler_program_runs_and_stops_on_ctrl_c() -> None:
    with ServerProcess([str(HOWTO / "stream_handler.py"), "0"]) as server:
        port = server.port()
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
            sock.sendall(b"hi\n")
            assert sock.recv(100) == b"HI\n"
            assert server.proc is not None
            server.proc.send_signal(signal.SIGINT)
            assert sock.recv(100) == b"server shutting down, bye\n"
            assert sock.recv(100) == b""
        assert server.wait() == "stopped"
    assert server.returncode == 0, server.stderr

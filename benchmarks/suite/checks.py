r"""Correctness checks for the protocol servers, run before any of them is timed.

Each check talks to a fresh server the way real clients do and then the way rude ones do:
commands split byte by byte, many pipelined in one write, values that contain the protocol's own
delimiters, values that span many reads, an empty value, a protocol error (which must end the
connection). They compare every reply byte for byte, except the text of error replies (only the
``-ERR`` / status code is compared, so that redis-server passes the same check). Every socket
call is bounded by a timeout. Standard library only.
"""

from __future__ import annotations

import smtplib
import socket
import zlib
from collections.abc import Callable
from typing import Final

from protocols import GET_BODY

HOST: Final = "127.0.0.1"


class CheckFailedError(Exception):
    """A server answered something other than what the protocol says."""


def expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise CheckFailedError(f"{what}: expected {want!r:.200}, got {got!r:.200}")


class Connection:
    """A blocking client connection with its own receive buffer."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_bytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])

    def _fill(self) -> None:
        more = self.sock.recv(65536)
        if not more:
            raise CheckFailedError(f"the server closed the connection; had {self.buffer!r:.200}")
        self.buffer += more

    def until(self, delimiter: bytes) -> bytes:
        """The bytes up to and including *delimiter*."""
        while (end := self.buffer.find(delimiter)) < 0:
            self._fill()
        end += len(delimiter)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def expect_eof(self, what: str) -> None:
        """The server closes the connection next (after *what*), sending nothing more."""
        extra = self.buffer
        try:
            while data := self.sock.recv(65536):
                extra += data
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise CheckFailedError(f"the server kept the connection open after {what}") from None
        expect(f"bytes after {what}", extra, b"")


# ------------------------------------------------------------------------------------------ RESP


def command(*args: bytes) -> bytes:
    """*args* as a RESP array command."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def read_reply(conn: Connection) -> bytes:
    """One RESP reply, as the raw bytes it arrived as."""
    line = conn.until(b"\r\n")
    kind = line[:1]
    if kind in (b"+", b"-", b":"):
        return line
    if kind == b"$":
        n = int(line[1:-2])
        return line if n < 0 else line + conn.exactly(n + 2)
    if kind == b"*":
        return line + b"".join(read_reply(conn) for _ in range(max(0, int(line[1:-2]))))
    raise CheckFailedError(f"not a RESP reply: {line!r:.200}")


def resp_exchange(conn: Connection, sent: list[tuple[bytes, bytes]], *, bytewise: bool) -> None:
    """Send every request of *sent* in one write (or byte by byte), then check each reply.

    A wanted reply of ``b"-ERR"`` matches any error reply; ``b""`` means no reply.
    """
    data = b"".join(request for request, _ in sent)
    if bytewise:
        conn.send_bytewise(data)
    else:
        conn.send(data)
    for request, want in sent:
        if not want:
            continue
        got = read_reply(conn)
        if want == b"-ERR":
            got = got[:4]
        expect(f"reply to {request!r:.80}", got, want)


def check_resp(port: int, timeout: float) -> None:
    """Inline and array commands, every command, pipelining, odd values, a protocol error."""
    binary = bytes(range(256)) + b"\r\n$3\r\n*1\r\n\r\n.\r\n"
    big = bytes(range(251)) * 400  # 100,400 bytes: many reads, not a multiple of anything
    steps: list[tuple[bytes, bytes]] = [
        (b"PING\r\n", b"+PONG\r\n"),
        (b"\r\n", b""),  # an empty inline command: no reply (checked by the next one's)
        (b"*0\r\n", b""),  # an empty array: no reply either
        (command(b"PING"), b"+PONG\r\n"),
        (command(b"ping", b"hello"), bulk(b"hello")),
        (command(b"ECHO", binary), bulk(binary)),
        (command(b"SET", b"check:bin", binary), b"+OK\r\n"),
        (command(b"GET", b"check:bin"), bulk(binary)),
        (command(b"SET", b"check:empty", b""), b"+OK\r\n"),
        (command(b"GET", b"check:empty"), b"$0\r\n\r\n"),
        (command(b"GET", b"check:missing"), b"$-1\r\n"),
        (b"set check:inline hello\r\n", b"+OK\r\n"),
        (b"GET  check:inline\r\n", bulk(b"hello")),
        (command(b"INCR", b"check:n"), b":1\r\n"),
        (command(b"incr", b"check:n"), b":2\r\n"),
        (b"INCR check:n\r\n", b":3\r\n"),
        (command(b"GET", b"check:n"), bulk(b"3")),
        (command(b"INCR", b"check:bin"), b"-ERR"),
        (command(b"DEL", b"check:n", b"check:missing", b"check:inline"), b":2\r\n"),
        (command(b"GET", b"check:n"), b"$-1\r\n"),
        (command(b"CONFIG", b"GET", b"appendonly"), b"*2\r\n" + bulk(b"appendonly") + bulk(b"no")),
        (command(b"NOSUCHCOMMAND", b"x"), b"-ERR"),
        (command(b"GET"), b"-ERR"),
        (b"GET\r\n", b"-ERR"),
    ]
    with Connection(port, timeout) as conn:
        for step in steps:
            resp_exchange(conn, [step], bytewise=False)
        # Pipelined: 300 commands in one write, replies in order.
        pipelined = []
        for i in range(100):
            key, value = b"check:p:%d" % i, b"value %d " % i * (i % 7)
            pipelined += [(command(b"SET", key, value), b"+OK\r\n")]
            pipelined += [(command(b"GET", key), bulk(value)), (b"PING\r\n", b"+PONG\r\n")]
        resp_exchange(conn, pipelined, bytewise=False)
        # Byte by byte: every frame and every bulk string split across reads.
        split = [
            (command(b"SET", b"check:split", binary[:40]), b"+OK\r\n"),
            (command(b"GET", b"check:split"), bulk(binary[:40])),
            (b"ECHO x\r\n", bulk(b"x")),
        ]
        resp_exchange(conn, split, bytewise=True)
        # A value larger than one read, then read back, twice in one write.
        resp_exchange(conn, [(command(b"SET", b"check:big", big), b"+OK\r\n")], bytewise=False)
        twice = [(command(b"GET", b"check:big"), bulk(big))] * 2
        resp_exchange(conn, twice, bytewise=False)
    # A bulk string whose length is not a number: an error reply, then the server hangs up.
    with Connection(port, timeout) as conn:
        conn.send(b"*2\r\n$3\r\nGET\r\n$x\r\n")
        expect("reply to a bad bulk length", read_reply(conn)[:19], b"-ERR Protocol error")
        conn.expect_eof("a protocol error")


def benchmark_value(size: int) -> bytes:
    """The value ``redis-benchmark -d size`` SETs (version 7: a fixed pseudo-random sequence from
    its ``genBenchmarkRandomData``; older versions send ``size`` bytes of ``x``)."""
    state = 1234
    value = bytearray()
    for _ in range(size):
        state = (state * 1103515245 + 12345) & 0xFFFFFFFF
        value.append(ord("0") + ((state >> 16) & 63))
    return bytes(value)


def check_resp_benchmark_key(port: int, timeout: float, data_size: int) -> None:
    """After ``redis-benchmark -t set``: GET returns the value it set."""
    with Connection(port, timeout) as conn:
        conn.send(command(b"GET", b"key:__rand_int__"))
        got = read_reply(conn)
    if got not in (bulk(benchmark_value(data_size)), bulk(b"x" * data_size)):
        raise CheckFailedError(f"GET after redis-benchmark's SET returned {got!r:.200}")


# ------------------------------------------------------------------------------------------ HTTP


def http_request(
    method: bytes, body: bytes = b"", *, version: bytes = b"HTTP/1.1", extra: bytes = b""
) -> bytes:
    head = b"%s /check HTTP/1.1\r\nHost: bench\r\n" % method
    if version != b"HTTP/1.1":
        head = head.replace(b"HTTP/1.1", version, 1)
    if method in (b"POST", b"PUT"):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + extra + b"\r\n" + body


def read_response(conn: Connection) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, header fields with lowercase names, body) of one response."""
    head = conn.until(b"\r\n\r\n")[:-4]
    status_line, *lines = head.split(b"\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = fields.get(b"content-length")
    if length is None:
        raise CheckFailedError(f"a response without Content-Length: {head!r:.200}")
    return int(status_line.split()[1]), fields, conn.exactly(int(length))


def http_exchange(
    conn: Connection, sent: list[tuple[bytes, bytes]], *, bytewise: bool = False
) -> None:
    """Send the requests of *sent* in one write, check each response's status and body."""
    data = b"".join(request for request, _ in sent)
    if bytewise:
        conn.send_bytewise(data)
    else:
        conn.send(data)
    for request, want in sent:
        status, _, body = read_response(conn)
        expect(f"status of {request[:40]!r}", status, 200)
        expect(f"body of the response to {request[:40]!r}", body, want)


def check_http(port: int, timeout: float) -> None:
    """Keep-alive GET and POST, pipelining, bodies with CRLFs, a body over many reads,
    ``Connection: close``, HTTP/1.0 with and without keep-alive, a malformed request."""
    binary = bytes(range(256)) + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    big = bytes(range(251)) * 800  # 200,800 bytes
    with Connection(port, timeout) as conn:
        http_exchange(conn, [(http_request(b"GET"), GET_BODY)])
        http_exchange(conn, [(http_request(b"POST", binary), binary)])
        http_exchange(conn, [(http_request(b"POST", b""), b"")])
        pipelined = [
            (http_request(b"GET"), GET_BODY),
            (http_request(b"POST", binary * 4), binary * 4),
            (http_request(b"PUT", b"x"), b"x"),
            (http_request(b"GET"), GET_BODY),
        ]
        http_exchange(conn, pipelined)
        http_exchange(conn, [(http_request(b"POST", b"split\r\n\r\n"), b"split\r\n\r\n")] * 2)
        http_exchange(conn, [(http_request(b"POST", b"bytewise"), b"bytewise")], bytewise=True)
        http_exchange(conn, [(http_request(b"POST", big), big)])
        # ab -k: HTTP/1.0 with Connection: Keep-Alive stays open.
        keep = http_request(b"GET", version=b"HTTP/1.0", extra=b"Connection: Keep-Alive\r\n")
        conn.send(keep)
        _, fields, _ = read_response(conn)
        expect(
            "Connection of a keep-alive HTTP/1.0 response", fields.get(b"connection"), b"keep-alive"
        )
        http_exchange(conn, [(http_request(b"GET"), GET_BODY)])
        # Connection: close: the response, then the server hangs up.
        conn.send(http_request(b"POST", b"last", extra=b"Connection: close\r\n"))
        status, fields, body = read_response(conn)
        expect("response to Connection: close", (status, body), (200, b"last"))
        conn.expect_eof("a Connection: close request")
    with Connection(port, timeout) as conn:  # HTTP/1.0 without keep-alive: one request only
        conn.send(http_request(b"GET", version=b"HTTP/1.0"))
        expect("status of an HTTP/1.0 GET", read_response(conn)[0], 200)
        conn.expect_eof("an HTTP/1.0 request without keep-alive")
    with Connection(port, timeout) as conn:  # garbage: 400, then the server hangs up
        conn.send(b"HELLO\r\n\r\n")
        expect("status of a malformed request", read_response(conn)[0], 400)
        conn.expect_eof("a malformed request")


# ------------------------------------------------------------------------------------------ SMTP


def make_body(size: int) -> bytes:
    """*size* bytes of CRLF-ended 78-character lines, every seventh one starting with a dot (so
    dot-stuffing is exercised), no trailing CRLF."""
    lines = []
    total = 0
    i = 0
    while total < size:
        line = (b"." if i % 7 == 3 else b"") + (b"line %d " % i).ljust(78 - (i % 7 == 3), b"m")
        lines.append(line)
        total += len(line) + 2
        i += 1
    return b"\r\n".join(lines)[:size].rstrip(b"\r")


def smtp_expected(body: bytes) -> bytes:
    """What ``smtplib.SMTP.data(body)`` makes the server receive, then report (see
    ``protocols.message_reply``): the body, without its final CRLF if it had one."""
    message = body[:-2] if body.endswith(b"\r\n") else body
    return b"queued: %d bytes, crc32 %08x" % (len(message), zlib.crc32(message))


def send_message(client: smtplib.SMTP, body: bytes, expected: bytes) -> None:
    """One mail transaction (MAIL, RCPT, DATA), checking the server's account of the message."""
    code, reply = client.mail("bench@example.invalid")
    expect("reply to MAIL", code, 250)
    code, reply = client.rcpt("sink@example.invalid")
    expect("reply to RCPT", code, 250)
    code, reply = client.data(body)
    if code != 250 or expected not in reply:
        raise CheckFailedError(f"reply to DATA: expected 250 ...{expected!r}, got {code} {reply!r}")


def check_smtp(port: int, timeout: float) -> None:
    """smtplib's conversation with every kind of body, sequence errors, a body byte by byte."""
    bodies = [
        b"",
        b"hello\r\n",
        b"no final line break",
        b".\r\n..\r\n.x\r\n\r\n.\r\nend",  # lines that are, or start with, dots
        b"Subject: test\r\n\r\n" + bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b""),
        make_body(1024),
        make_body(300_000),
    ]
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        expect("reply to EHLO", client.ehlo("check.invalid")[0], 250)
        for body in bodies:
            send_message(client, body, smtp_expected(body))
        expect("reply to NOOP", client.noop()[0], 250)
        expect("reply to RSET", client.rset()[0], 250)
        expect("DATA before MAIL", client.docmd("DATA")[0], 503)
        expect("reply to an unknown command", client.docmd("FROB")[0], 500)
        send_message(client, b"after the errors", smtp_expected(b"after the errors"))
        expect("reply to QUIT", client.quit()[0], 221)
    # The same transaction from a rude client: every byte in its own write.
    with Connection(port, timeout) as conn:
        expect("greeting", conn.until(b"\r\n")[:4], b"220 ")
        body = b"one\r\n.two\r\n\r\n.\r\nthree"
        conn.send_bytewise(b"HELO rude.invalid\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        for code in (b"250", b"250", b"250", b"354"):
            expect("reply code", conn.until(b"\r\n")[:3], code)
        conn.send_bytewise(body.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\nQUIT\r\n")
        reply = conn.until(b"\r\n")
        if smtp_expected(body) not in reply:
            raise CheckFailedError(f"reply to a bytewise message: {reply!r}")
        expect("reply to QUIT", conn.until(b"\r\n")[:3], b"221")
        conn.expect_eof("QUIT")


#: The check for each protocol workload.
CHECKS: Final[dict[str, Callable[[int, float], None]]] = {
    "resp": check_resp,
    "http": check_http,
    "smtp": check_smtp,
}

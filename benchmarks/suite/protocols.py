r"""The protocol workloads' rules, shared by every server: RESP, HTTP/1.1 and SMTP.

Each server frames the bytes its own idiomatic way (terminators, ``receive_until``, a
``bytes.find`` loop, ``readuntil``, ``LineReceiver``) and hands every frame to these functions,
so the parsing rules, the replies and the store are the same everywhere and what differs between
servers is the framing and the I/O. Standard library only, like ``suite_common.py``.

RESP (the Redis protocol, RESP2):

* an *inline* command is a line ended by ``b"\r\n"``, split on whitespace (an empty line is
  ignored);
* an *array* command is ``b"*N\r\n"`` then N bulk strings, each ``b"$len\r\n"`` then ``len``
  bytes then ``b"\r\n"``; N <= 0 is an empty command (ignored);
* a malformed header or a bulk string not followed by ``b"\r\n"`` gets a
  ``-ERR Protocol error`` reply, then the server closes the connection (as redis-server does);
* commands (case-insensitive): PING [msg], ECHO msg, SET key value, GET key, DEL key...,
  INCR key, and CONFIG GET name (for the handful of settings ``redis-benchmark`` asks about).

HTTP/1.1: a request head ends with ``b"\r\n\r\n"``; a Content-Length body follows (read with a
count); ``GET`` answers a fixed body, ``POST`` and ``PUT`` echo the request body; connections
are kept alive (HTTP/1.1 unless ``Connection: close``, HTTP/1.0 with ``Connection:
keep-alive``, which is what ``ab -k`` sends). Chunked bodies are refused (501).

SMTP: command lines ended by ``b"\r\n"``; after ``DATA`` the message runs to ``b"\r\n.\r\n"``
and is dot-unstuffed; the reply to it names the message's length and CRC-32, so a client can
check that it arrived intact.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final, NamedTuple

# ------------------------------------------------------------------------------------------ RESP

# 64 KiB: redis-server's own limit for an inline command or a header line (PROTO_INLINE_MAX_SIZE).
MAX_INLINE: Final = 64 * 1024
# 8 MiB: far above the values the workloads send (3 bytes from redis-benchmark, 100 KB in the
# checks), far below what would let one connection make a server hold much (redis allows 512 MB).
MAX_BULK: Final = 8 * 1024 * 1024
# redis-server's limit on the elements of one array command.
MAX_ARGS: Final = 1024 * 1024

PONG: Final = b"+PONG\r\n"
OK: Final = b"+OK\r\n"
NIL: Final = b"$-1\r\n"
NOT_AN_INTEGER: Final = b"-ERR value is not an integer or out of range\r\n"
# What CONFIG GET answers (as redis-server with persistence turned off would): redis-benchmark
# asks for these two when it starts, and prints a warning if the answer is not an array.
CONFIG: Final = {b"save": b"", b"appendonly": b"no"}
# 2**63 - 1: INCR works on signed 64-bit integers.
INT64_MAX: Final = 2**63 - 1


class RespError(Exception):
    """A RESP protocol error: send :attr:`reply`, then close the connection."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.reply = b"-ERR Protocol error: %s\r\n" % what.encode("ascii", "replace")


def _decimal(digits: bytes) -> int | None:
    """``int(digits)`` for an optional ``-`` and 1 to 18 ASCII digits, else None.

    Stricter than ``int()``, which also takes spaces, ``+`` and ``_``; 18 digits fit in 64 bits.
    """
    body = digits[1:] if digits[:1] == b"-" else digits
    if 0 < len(body) <= 18 and body.isdigit():
        return int(digits)
    return None


def array_length(line: bytes) -> int:
    """The N of a ``b"*N"`` header line (without its ``b"\\r\\n"``); <= 0 means no command."""
    n = _decimal(line[1:])
    if n is None or n > MAX_ARGS:
        raise RespError("invalid multibulk length")
    return n


def bulk_length(line: bytes) -> int:
    """The length of a ``b"$len"`` header line (without its ``b"\\r\\n"``)."""
    if line[:1] != b"$":
        raise RespError(f"expected '$', got '{line[:1].decode('latin-1')}'")
    n = _decimal(line[1:])
    if n is None or n < 0 or n > MAX_BULK:
        raise RespError("invalid bulk length")
    return n


def bulk_payload(frame: bytes) -> bytes:
    """A bulk string read with a count of ``len + 2``: the value, without its ``b"\\r\\n"``."""
    if frame[-2:] != b"\r\n":
        raise RespError("expected CRLF after a bulk string")
    return frame[:-2]


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _arity(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower()


class RespStore:
    """The key-value store behind every RESP server: :meth:`execute` runs one command."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.commands: dict[bytes, Callable[[list[bytes]], bytes]] = {
            b"PING": self.ping,
            b"ECHO": self.echo,
            b"SET": self.set,
            b"GET": self.get,
            b"DEL": self.delete,
            b"INCR": self.incr,
            b"CONFIG": self.config,
        }

    def execute(self, args: list[bytes]) -> bytes:
        """The reply to the command *args* (never empty)."""
        command = self.commands.get(args[0].upper())
        if command is None:
            return b"-ERR unknown command '%s'\r\n" % args[0][:64]
        return command(args)

    def ping(self, args: list[bytes]) -> bytes:
        if len(args) == 1:
            return PONG
        return bulk(args[1]) if len(args) == 2 else _arity(b"ping")

    def echo(self, args: list[bytes]) -> bytes:
        return bulk(args[1]) if len(args) == 2 else _arity(b"echo")

    def set(self, args: list[bytes]) -> bytes:
        if len(args) != 3:
            # SET's options (EX, NX, ...) are not implemented.
            return _arity(b"set") if len(args) < 3 else b"-ERR syntax error\r\n"
        self.data[args[1]] = args[2]
        return OK

    def get(self, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return _arity(b"get")
        value = self.data.get(args[1])
        return NIL if value is None else bulk(value)

    def delete(self, args: list[bytes]) -> bytes:
        if len(args) < 2:
            return _arity(b"del")
        data = self.data
        gone = 0
        for key in args[1:]:
            if data.pop(key, None) is not None:
                gone += 1
        return b":%d\r\n" % gone

    def incr(self, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return _arity(b"incr")
        old = self.data.get(args[1], b"0")
        value = _decimal(old)
        if value is None or value >= INT64_MAX:
            return NOT_AN_INTEGER
        self.data[args[1]] = b"%d" % (value + 1)
        return b":%d\r\n" % (value + 1)

    def config(self, args: list[bytes]) -> bytes:
        if len(args) != 3 or args[1].upper() != b"GET":
            return b"-ERR only CONFIG GET name is implemented\r\n"
        value = CONFIG.get(args[2].lower())
        return b"*0\r\n" if value is None else b"*2\r\n" + bulk(args[2]) + bulk(value)


# ------------------------------------------------------------------------------------------ HTTP

# 16 KiB for a request head, as h11 allows by default.
MAX_HEAD: Final = 16 * 1024
# 8 MiB: a body is read with a count, so it needs its own limit (the workloads send 1 KiB).
MAX_BODY: Final = 8 * 1024 * 1024
# What GET answers: short, as a health check or a small API response would be.
GET_BODY: Final = b"hello from the benchmark\n"


class HttpRequest(NamedTuple):
    method: bytes
    target: bytes
    keep_alive: bool
    content_length: int


class HttpError(Exception):
    """A request that cannot be served: send :attr:`response`, then close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        body = reason.encode("ascii") + b"\n"
        self.response = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            status,
            reason.encode("ascii"),
            len(body),
            body,
        )


def parse_head(head: bytes) -> HttpRequest:
    """The request in *head* (the bytes before ``b"\\r\\n\\r\\n"``).

    Raises:
        HttpError: a malformed request line or header field (400), a bad or conflicting
            Content-Length (400), a body over ``MAX_BODY`` (413), a Transfer-Encoding (501).
    """
    request_line, _, fields = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[0]:
        raise HttpError(400, "Bad Request")
    method, target, version = parts
    connection = b""
    length = b""
    if fields:
        for field in fields.split(b"\r\n"):
            name, colon, value = field.partition(b":")
            if not colon or not name or name != name.strip():
                raise HttpError(400, "Bad Request")
            name = name.lower()
            if name == b"content-length":
                value = value.strip()
                if length and value != length:
                    raise HttpError(400, "Bad Request")
                length = value
            elif name == b"connection":
                connection = value.lower()
            elif name == b"transfer-encoding":
                raise HttpError(501, "Not Implemented")
    content_length = 0
    if length:
        if not (length.isdigit() and len(length) <= 18):
            raise HttpError(400, "Bad Request")
        content_length = int(length)
        if content_length > MAX_BODY:
            raise HttpError(413, "Content Too Large")
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    return HttpRequest(method, target, keep_alive, content_length)


def respond(request: HttpRequest, body: bytes) -> bytes:
    """The response to *request* with *body*: GET a fixed text, POST and PUT the body back."""
    method = request.method
    if method == b"GET" or method == b"HEAD":
        status, payload = b"200 OK", GET_BODY
    elif method == b"POST" or method == b"PUT":
        status, payload = b"200 OK", body
    else:
        status, payload = b"405 Method Not Allowed", b""
    connection = b"keep-alive" if request.keep_alive else b"close"
    head = (
        b"HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n" % (status, len(payload), connection)
    )
    return head if method == b"HEAD" else head + payload


# ------------------------------------------------------------------------------------------ SMTP

# 1 KiB for a command line: RFC 5321 asks for 512 bytes at least.
MAX_COMMAND: Final = 1024
# 32 MiB for one message (the workloads send up to 1 MiB).
MAX_MESSAGE: Final = 32 * 1024 * 1024
GREETING: Final = b"220 bench.invalid ESMTP trio_chat benchmark\r\n"


def unstuff(frame: bytes) -> bytes:
    """The message in a DATA frame (up to, not including, ``b"\\r\\n.\\r\\n"``): every line that
    starts with a dot loses that dot (RFC 5321, section 4.5.2)."""
    if frame[:1] == b".":
        frame = frame[1:]
    return frame.replace(b"\r\n..", b"\r\n.") if b"\r\n.." in frame else frame


def message_reply(message: bytes) -> bytes:
    """The reply to a message: its length and CRC-32, which the client checks."""
    return b"250 2.0.0 queued: %d bytes, crc32 %08x\r\n" % (len(message), zlib.crc32(message))


class SmtpSession:
    """One connection's SMTP state: feed :meth:`command` each command line.

    After a reply, :attr:`in_data` says the next frame is a message (ending with
    ``b"\\r\\n.\\r\\n"``), for :meth:`message`; :attr:`closing` says close after the reply.
    """

    def __init__(self) -> None:
        self.greeted = False
        self.sender: bytes | None = None
        self.recipients = 0
        self.in_data = False
        self.closing = False
        self.messages = 0

    def command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"MAIL":
            if not self.greeted or self.sender is not None:
                return b"503 5.5.1 bad sequence of commands\r\n"
            if line[4:10].upper() != b" FROM:":
                return b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"
            self.sender = line[10:].strip()
            return b"250 2.1.0 ok\r\n"
        if verb == b"RCPT":
            if self.sender is None:
                return b"503 5.5.1 need MAIL first\r\n"
            if line[4:8].upper() != b" TO:":
                return b"501 5.5.4 syntax: RCPT TO:<address>\r\n"
            self.recipients += 1
            return b"250 2.1.5 ok\r\n"
        if verb == b"DATA" and len(line) == 4:
            if not self.recipients:
                return b"503 5.5.1 need RCPT first\r\n"
            self.in_data = True
            return b"354 end data with <CR><LF>.<CR><LF>\r\n"
        if verb in (b"EHLO", b"HELO") and line[4:5] == b" ":
            self.greeted = True
            self.sender, self.recipients = None, 0
            if verb == b"HELO":
                return b"250 bench.invalid\r\n"
            return b"250-bench.invalid\r\n250-8BITMIME\r\n250 SIZE %d\r\n" % MAX_MESSAGE
        if verb == b"RSET":
            self.sender, self.recipients = None, 0
            return b"250 2.0.0 ok\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 ok\r\n"
        if verb == b"QUIT":
            self.closing = True
            return b"221 2.0.0 bye\r\n"
        return b"500 5.5.2 command not recognized\r\n"

    def message(self, frame: bytes) -> bytes:
        """The reply to a DATA frame; ends the mail transaction."""
        self.in_data = False
        self.sender, self.recipients = None, 0
        self.messages += 1
        return message_reply(unstuff(frame))

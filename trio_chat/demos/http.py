"""An HTTP/1.1 server on AsyncChat: the asynchat documentation's request reader, completed.

The asynchat documentation ends with a fragment: a handler that reads the request headers up to
the blank line, then, for a POST, switches to a count terminator to read exactly Content-Length
bytes of body, then calls ``handle_request()``. This is that handler grown into a correct,
bounded HTTP/1.1 reader, still built from terminators:

* the header block is one frame, ended by a regular-expression terminator ``\\r?\\n\\r?\\n``
  (bare ``\\n`` line ends are accepted, as RFC 9112 allows), so ``frame_timeout`` bounds the
  whole block, as nginx's ``client_header_timeout`` does;
* a body is a count terminator (``Content-Length``) or, for ``Transfer-Encoding: chunked``, a
  line terminator ``(b"\\r\\n", b"\\n")`` for each chunk size and a count for each chunk;
* keep-alive (HTTP/1.1's default; HTTP/1.0 when asked) and pipelining: after a response the
  terminator is set for the next request, and input already received is read at once;
* ``HEAD`` gets the headers ``GET`` would, and no body; ``Expect: 100-continue`` gets
  ``100 Continue`` before the body is read;
* every size is bounded and answered: 414 for a request line over 8 KiB, 431 for a header block
  over 16 KiB or 100 fields, 413 for a body over 1 MiB, 400 for anything malformed (and for
  ``Content-Length`` with ``Transfer-Encoding``, the request-smuggling combination);
* a form is summarised as it streams in (its fields counted, the first few kept), never parsed
  whole in a hook, and nothing of a request is kept after its response.

Try it::

    python -m trio_chat http --port 8080
    curl http://127.0.0.1:8080/hello
    curl -d 'name=trio&lang=python' http://127.0.0.1:8080/form
"""

from __future__ import annotations

import email.utils
import re
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Final

import attrs
import trio

import trio_chat
from trio_chat import AsyncChat

__all__ = ["FormSummary", "HttpRequestHandler", "Request"]

# --- limits, each with its reason ---

# The request line: RFC 9112 section 3 asks servers to accept at least 8,000 octets; 8 KiB is
# what nginx (large_client_header_buffers) and Apache (LimitRequestLine) allow. Longer: 414.
MAX_REQUEST_LINE: Final = 8 * 1024
# The whole header block: h11's default limit. Longer: 431.
MAX_HEADER_BLOCK: Final = 16 * 1024
# Header fields per request: Apache's LimitRequestFields. More: 431.
MAX_HEADER_FIELDS: Final = 100
# A request body: enough for any form a person fills in. Larger: 413, before it is read.
MAX_BODY: Final = 1024 * 1024
# One chunk-size line (hex digits and chunk extensions), which no real client makes long.
MAX_CHUNK_LINE: Final = 1024
# What a response shows of a form: its first fields, from at most its first 4 KiB.
FORM_FIELDS_SHOWN: Final = 20
FORM_BYTES_KEPT: Final = 4096

# Seconds a header block may take from its first byte (the handler's frame_timeout), so a peer
# cannot hold a connection by trickling a header a byte at a time (slowloris). nginx allows 60;
# a request's headers are a few hundred bytes, sent at once by every real client.
HEADER_TIMEOUT: Final = 10.0
# A body may take longer, in proportion to its size: its frame_timeout is HEADER_TIMEOUT plus
# one second per MIN_BODY_RATE bytes (Apache's mod_reqtimeout does the same with MinRate):
# a 1 MiB form on a 64 KiB/s link has 26 seconds.
MIN_BODY_RATE: Final = 64 * 1024
# Seconds without any input or progress before the connection is closed: a keep-alive
# connection waiting for its next request, or a peer that stopped reading (nginx: 75).
IDLE_TIMEOUT: Final = 30.0

# The end of the header block: an empty line, after CRLF or bare LF line ends.
HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
LINE_END: Final = (b"\r\n", b"\n")

_LINE_SPLIT: Final = re.compile(rb"\r?\n")
# RFC 9110 section 5.6.2: a token (methods, header names).
_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A request target: visible ASCII only (no spaces, no control characters: it goes in the log).
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
# A field value may hold visible characters, spaces, tabs and obs-text; no other control byte.
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION: Final = re.compile(rb"HTTP/(\d)\.(\d)")
_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")


@attrs.define
class Request:
    """What the header block said."""

    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str]  # lower-cased names; repeated fields joined with ", "
    keep_alive: bool = True


@attrs.define
class FormSummary:
    """A urlencoded form, summarised as its bytes arrive: how many fields, and the first few.

    Memory stays at :data:`FORM_BYTES_KEPT` bytes whatever the form's size, and the work per
    piece is one ``bytes.count``: a form of a hundred thousand fields costs no more to read than
    its bytes.
    """

    size: int = 0
    separators: int = 0
    kept: bytearray = attrs.field(factory=bytearray)

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.separators += data.count(b"&")
        if len(self.kept) < FORM_BYTES_KEPT:
            self.kept += data[: FORM_BYTES_KEPT - len(self.kept)]

    @property
    def fields(self) -> int:
        return self.separators + 1 if self.size else 0

    def shown(self) -> list[tuple[str, str]]:
        """The first fields, decoded; only those entirely within the bytes kept."""
        kept = bytes(self.kept)
        if self.size > len(kept):
            kept = kept.rpartition(b"&")[0]  # the last field was cut: leave it out
        first = kept.split(b"&", FORM_FIELDS_SHOWN)[:FORM_FIELDS_SHOWN]
        text = b"&".join(first).decode("ascii", "replace")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="replace")
        return pairs[:FORM_FIELDS_SHOWN]


class HttpError(Exception):
    """A request that gets an error response, after which the connection is closed."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(f"{status} {reason}: {text}")
        self.status = status
        self.reason = reason
        self.text = text


class HttpRequestHandler(AsyncChat):
    """Serves HTTP/1.1 requests (GET, HEAD, POST) on one connection, one after another.

    Args:
        stream: the connection (or None: :meth:`run` gets it).
        log: called with one line per response (peer, method, target, status).
    """

    # Our own counts answer 414 and 431 first; this is the backstop for a frame the counts do
    # not see (a chunk-size line, a trailer), so nothing grows past a known size.
    max_frame_size: int | None = MAX_HEADER_BLOCK + 4
    idle_timeout: float | None = IDLE_TIMEOUT
    frame_timeout: float | None = HEADER_TIMEOUT

    def __init__(
        self, stream: trio.abc.Stream | None = None, log: Callable[[str], object] = print
    ) -> None:
        super().__init__(stream)
        self.log = log
        self.pieces: list[bytes] = []
        self.size: int = 0  # bytes of the header block (or line) collected so far
        self.line_ended: bool = False  # a line end was seen in the header block: the request line
        self.phase: str = "headers"
        self.request: Request | None = None
        self.form: FormSummary | None = None
        self.body_size: int = 0
        self.trailer_bytes: int = 0
        self.header_timeout: float | None = self.frame_timeout
        self.next_request()

    def next_request(self) -> None:
        """Forget the last request; read the next header block (at once if already here)."""
        self.pieces.clear()
        self.size = 0
        self.line_ended = False
        self.request = None
        self.form = None
        self.body_size = 0
        self.trailer_bytes = 0
        self.phase = "headers"
        self.set_terminator(HEADER_END)

    # --- hooks ---

    def handle_connect(self) -> None:
        # serve_tcp(frame_timeout=...) sets the attribute after __init__: that is the header
        # timeout from here on, and bodies get more time on top of it.
        self.header_timeout = self.frame_timeout

    def collect_incoming_data(self, data: bytes) -> None:
        if self.phase in ("body", "chunk"):
            if self.form is not None:
                self.form.feed(data)  # and nothing else is kept of a body
            return
        if self.phase == "headers" and not self.line_ended:
            end = data.find(b"\n")
            self.line_ended = end >= 0
            if (self.size + end if self.line_ended else self.size + len(data)) > MAX_REQUEST_LINE:
                self.fail(HttpError(414, "URI Too Long", "request line over 8 KiB\n"))
                return
        self.size += len(data)
        if self.phase == "headers":
            if self.size > MAX_HEADER_BLOCK:
                self.fail(
                    HttpError(431, "Request Header Fields Too Large", "header block over 16 KiB\n")
                )
                return
        elif self.size > MAX_CHUNK_LINE:
            self.fail(HttpError(400, "Bad Request", "chunk line too long\n"))
            return
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.size = 0
        try:
            if self.phase == "headers":
                self.headers_done(line)
            elif self.phase == "body":
                self.request_done()
            elif self.phase == "chunk size":
                self.chunk_size(line)
            elif self.phase == "chunk":  # a chunk's data: a line end follows it
                self.read_line("chunk end")
            elif self.phase == "chunk end":
                self.chunk_end(line)
            elif self.phase == "trailers":
                self.trailer(line)
        except HttpError as error:
            self.fail(error)

    def read_line(self, phase: str) -> None:
        self.phase = phase
        self.set_terminator(LINE_END)

    def read_body(self, phase: str, size: int) -> None:
        """Read *size* bytes of body, with time for them on top of the header timeout."""
        self.phase = phase
        if self.header_timeout is not None:
            self.frame_timeout = self.header_timeout + size / MIN_BODY_RATE
        self.set_terminator(size)

    # --- the request ---

    def headers_done(self, block: bytes) -> None:
        block = block.lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before a request
        if not block:
            return
        request = self.request = parse_request(block)
        if request.version >= (1, 1) and "host" not in request.headers:
            raise HttpError(400, "Bad Request", "HTTP/1.1 needs a Host header\n")
        if request.method not in ("GET", "HEAD", "POST"):
            raise HttpError(501, "Not Implemented", "only GET, HEAD and POST are implemented\n")
        expect = request.headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise HttpError(417, "Expectation Failed", f"cannot meet Expect: {expect}\n")
        chunked = self.body_framing(request)
        content_type = request.headers.get("content-type", "application/x-www-form-urlencoded")
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            self.form = FormSummary()
        if (chunked or self.body_size) and expect is not None and request.version >= (1, 1):
            self.push(b"HTTP/1.1 100 Continue\r\n\r\n")  # go ahead: the body is wanted
        if chunked:
            self.read_line("chunk size")
        elif self.body_size:
            self.read_body("body", self.body_size)
        else:
            self.request_done()

    def body_framing(self, request: Request) -> bool:
        """Whether the body is chunked; else set ``body_size`` from Content-Length."""
        length = request.headers.get("content-length")
        coding = request.headers.get("transfer-encoding")
        if coding is not None:
            if length is not None:  # which one frames the body? Refuse (request smuggling)
                raise HttpError(400, "Bad Request", "Content-Length with Transfer-Encoding\n")
            if coding.lower() != "chunked":
                raise HttpError(501, "Not Implemented", f"transfer coding {coding!r}\n")
            return True
        if length is not None:
            values = {value.strip() for value in length.split(",")}
            if len(values) != 1 or not all(value.isascii() and value.isdigit() for value in values):
                raise HttpError(400, "Bad Request", f"bad Content-Length: {length!r}\n")
            self.body_size = int(values.pop())
            if self.body_size > MAX_BODY:
                raise HttpError(413, "Content Too Large", f"at most {MAX_BODY} bytes\n")
        return False

    def chunk_size(self, line: bytes) -> None:
        size_field = line.partition(b";")[0].strip(b" \t")  # chunk extensions are ignored
        if not _CHUNK_SIZE.fullmatch(size_field):
            raise HttpError(400, "Bad Request", "bad chunk size\n")
        size = int(size_field, 16)
        if size == 0:
            self.read_line("trailers")
            return
        self.body_size += size
        if self.body_size > MAX_BODY:
            raise HttpError(413, "Content Too Large", f"at most {MAX_BODY} bytes\n")
        self.read_body("chunk", size)

    def chunk_end(self, line: bytes) -> None:
        if line:
            raise HttpError(400, "Bad Request", "chunk data longer than its size\n")
        self.read_line("chunk size")

    def trailer(self, line: bytes) -> None:
        if not line:  # the empty line after the trailers: the request is complete
            self.request_done()
            return
        self.trailer_bytes += len(line)  # read and dropped
        if self.trailer_bytes > MAX_HEADER_BLOCK:
            raise HttpError(431, "Request Header Fields Too Large", "trailers over 16 KiB\n")

    def request_done(self) -> None:
        """The whole request is in: answer it, then read the next one or close."""
        request = self.request
        assert request is not None
        self.frame_timeout = self.header_timeout
        status, reason, text = self.answer(request)
        self.respond(status, reason, text, close=not request.keep_alive)
        if request.keep_alive:
            self.next_request()
        else:
            self.phase = "closing"
            self.close_when_done()

    def answer(self, request: Request) -> tuple[int, str, str]:
        """The response to a complete request: (status, reason, text)."""
        if request.method in ("GET", "HEAD"):
            return 200, "OK", f"Hello from trio_chat! You asked for {request.target}\n"
        form = self.form
        if form is None:
            content_type = request.headers.get("content-type", "")
            return 200, "OK", f"You posted {self.body_size} bytes of {content_type}\n"
        lines = [f"You posted {form.fields} field(s) to {request.target}\n"]
        shown = form.shown()
        lines += [f"{name} = {value}\n" for name, value in shown]
        if form.fields > len(shown):
            lines.append(f"... and {form.fields - len(shown)} more\n")
        return 200, "OK", "".join(lines)

    def fail(self, error: HttpError) -> None:
        """Answer *error*, then close: after a bad request the stream cannot be trusted."""
        if self.phase == "closing":
            return
        self.phase = "closing"
        self.respond(error.status, error.reason, error.text, close=True)
        self.close_when_done()  # input after this is not processed

    def respond(self, status: int, reason: str, text: str, *, close: bool) -> None:
        """Queue a complete response (without a body for HEAD)."""
        request = self.request
        body = text.encode()
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: trio_chat",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
        ]
        if close:
            head.append("Connection: close")
        elif request is not None and request.version < (1, 1):
            head.append("Connection: keep-alive")
        if request is not None and request.method == "HEAD":
            body = b""
        self.push(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        method, target = (request.method, request.target) if request else ("-", "-")
        self.log(f"{self.peer} {method} {target} {status}")


def parse_request(block: bytes) -> Request:
    """The request line and header fields of a header block; HttpError if malformed."""
    request_line, *field_lines = _LINE_SPLIT.split(block)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "Bad Request", "malformed request line\n")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise HttpError(400, "Bad Request", "malformed request line\n")
    major, minor = int(version[1]), int(version[2])
    if major != 1:
        raise HttpError(505, "HTTP Version Not Supported", "HTTP/1.0 and HTTP/1.1 only\n")
    if len(field_lines) > MAX_HEADER_FIELDS:
        raise HttpError(431, "Request Header Fields Too Large", "over 100 header fields\n")
    headers: dict[str, str] = {}
    for line in field_lines:
        name, colon, value = line.partition(b":")
        # No space before the colon, no folded lines (RFC 9112 5.1, 5.2): both have been used
        # to make two servers read one request differently.
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "Bad Request", "malformed header field\n")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, "Bad Request", "control character in a header field\n")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        if key in headers:
            if key == "host":
                raise HttpError(400, "Bad Request", "more than one Host header\n")
            text = f"{headers[key]}, {text}"
        headers[key] = text
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in connection if minor == 0 else "close" not in connection
    return Request(
        method=parts[0].decode("ascii"),
        target=parts[1].decode("ascii"),
        version=(major, minor),
        headers=headers,
        keep_alive=keep_alive,
    )


async def serve(
    host: str,
    port: int,
    *,
    log: Callable[[str], object] = print,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on *host*:*port* until cancelled; ``task_status.started()`` gets the port."""
    # The handler factory takes only the stream: bind other constructor arguments (asynchat's
    # example passed sessions and a log) with functools.partial.
    factory = partial(HttpRequestHandler, log=log)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_chat.serve_tcp, factory, port, host=host))
        task_status.started(listeners[0].socket.getsockname()[1])

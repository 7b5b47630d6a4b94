"""The HTTP request reader from the asynchat documentation, ported to trio_chat and completed.

The asynchat documentation ends with a fragment: a handler that reads the request headers up to
the blank line, then, for a POST, switches to a count terminator to read exactly Content-Length
bytes of body, then calls ``handle_request()``. Here is that handler with the parts the fragment
left out (``parse_headers``, the form parser, ``handle_request``, the server) filled in. It serves
one request per connection, as HTTP/1.0 does. Run it and ask it something::

    python examples/http_request_reader.py --port 8080
    curl http://127.0.0.1:8080/hello
    curl -d 'name=trio&lang=python' http://127.0.0.1:8080/form

``python -m trio_chat http`` serves the same handler (a test keeps the two copies identical).
"""

from __future__ import annotations

import argparse
import signal
import urllib.parse
from collections.abc import Callable, Sequence
from functools import partial

import trio

import trio_chat
from trio_chat import AsyncChat

# --- HttpRequestHandler: begin ---


class HttpRequestHandler(AsyncChat):
    """Reads one HTTP/1.x request (headers, then a Content-Length body) and answers it.

    Args:
        stream: the connection.
        log: called with one line per request answered (peer, method, path, status).
    """

    # The header block is one frame (terminator b"\r\n\r\n"): refuse more than 16 KiB of it, as
    # h11 does. A longer one ends the connection with FrameTooLongError, which serve_tcp logs.
    max_frame_size = 16 * 1024
    # A body is read with a count terminator, which max_frame_size does not limit: cap it here.
    max_body_size = 1024 * 1024
    # A client that connects and then says nothing is disconnected after this many seconds.
    idle_timeout = 30.0

    def __init__(self, stream: trio.abc.Stream, log: Callable[[str], object] = print) -> None:
        super().__init__(stream)
        self.log = log
        self.ibuffer: list[bytes] = []
        self.set_terminator(b"\r\n\r\n")
        self.reading_headers = True
        self.handling = False
        self.cgi_data: dict[str, list[str]] | None = None
        self.op = b""
        self.path = ""
        self.headers: dict[str, str] = {}

    def collect_incoming_data(self, data: bytes) -> None:
        """Buffer the data"""
        self.ibuffer.append(data)

    def found_terminator(self) -> None:
        if self.reading_headers:
            self.reading_headers = False
            ok = self.parse_headers(b"".join(self.ibuffer))
            self.ibuffer = []
            if not ok:
                return  # parse_headers() has answered 400
            if self.op.upper() == b"POST":
                clen = self.content_length()
                if clen is None:
                    return  # content_length() has answered 4xx
                if clen == 0:
                    # 0 acts as None (as in asynchat): found_terminator() would never come.
                    self.handle_post(b"")
                    return
                self.set_terminator(clen)
            else:
                self.handling = True
                self.set_terminator(None)
                self.handle_request()
        elif not self.handling:
            self.handle_post(b"".join(self.ibuffer))

    def handle_post(self, body: bytes) -> None:
        self.set_terminator(None)  # browsers sometimes over-send
        self.cgi_data = parse_form(self.headers, body)
        self.handling = True
        self.ibuffer = []
        self.handle_request()

    def parse_headers(self, data: bytes) -> bool:
        """Parse the request line and the header fields; answer 400 if they are malformed."""
        request_line, _, header_block = data.lstrip(b"\r\n").partition(b"\r\n")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.send_response(400, "Bad Request", "malformed request line\n")
            return False
        self.op = parts[0]
        self.path = parts[1].decode("latin-1")
        for line in header_block.split(b"\r\n") if header_block else []:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                self.send_response(400, "Bad Request", "malformed header field\n")
                return False
            self.headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        return True

    def content_length(self) -> int | None:
        """The body's length from the headers; answers 4xx/501 and returns None if unusable."""
        if "transfer-encoding" in self.headers:
            self.send_response(501, "Not Implemented", "chunked bodies are not supported\n")
            return None
        clen = self.headers.get("content-length")
        if clen is None:
            self.send_response(411, "Length Required", "POST needs a Content-Length\n")
            return None
        if not (clen.isascii() and clen.isdigit()):
            self.send_response(400, "Bad Request", f"bad Content-Length: {clen!r}\n")
            return None
        if int(clen) > self.max_body_size:
            self.send_response(413, "Content Too Large", f"at most {self.max_body_size} bytes\n")
            return None
        return int(clen)

    def handle_request(self) -> None:
        method = self.op.upper()
        if method == b"GET":
            self.send_response(200, "OK", f"Hello from trio_chat! You asked for {self.path}\n")
        elif method == b"POST":
            fields = self.cgi_data or {}
            body = f"You posted {sum(map(len, fields.values()))} field(s) to {self.path}\n"
            for name, values in fields.items():
                body += "".join(f"{name} = {value}\n" for value in values)
            self.send_response(200, "OK", body)
        else:
            self.send_response(501, "Not Implemented", "only GET and POST are implemented\n")

    def send_response(self, status: int, reason: str, text: str) -> None:
        """Queue a complete response, then close once it is sent."""
        body = text.encode()
        head = (
            f"HTTP/1.0 {status} {reason}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
            "\r\n"
        )
        self.push(head.encode("latin-1") + body)
        self.close_when_done()
        self.log(f"{self.peer} {self.op.decode('latin-1') or '-'} {self.path or '-'} {status}")


def parse_form(headers: dict[str, str], body: bytes) -> dict[str, list[str]]:
    """The fields of a urlencoded form body (the ``parse()`` the asynchat fragment calls)."""
    content_type = headers.get("content-type", "application/x-www-form-urlencoded")
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {"(body)": [f"{len(body)} bytes of {content_type}"]}
    return urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


# --- HttpRequestHandler: end ---


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
        host, port = listeners[0].socket.getsockname()[:2]
        print(f"serving HTTP on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
        task_status.started(port)


async def serve_until_ctrl_c(host: str, port: int) -> None:
    """Serve until Ctrl-C: cancelling the nursery closes every connection, then we return."""
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, host, port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The asynchat HTTP request reader, on trio.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    args = parser.parse_args(argv)
    trio.run(serve_until_ctrl_c, args.host, args.port)


if __name__ == "__main__":
    main()

"""The demo handlers behind ``python -m trio_chat`` (the CLI layer: nothing imports this).

* :class:`EchoHandler` for ``echo``;
* :class:`HttpRequestHandler` for ``http``: a verbatim copy of the handler in
  ``examples/http_request_reader.py`` (the migration guide's ported program; the examples are not
  part of the installed package). ``tests/test_cli.py`` fails if the two copies differ;
* :class:`TaskTreeTracer` for ``--trace``: a ``trio.abc.Instrument`` that prints the live task
  tree as connections come and go.

A demo whose handler lives in ``examples/`` (the chat room will) is copied here the same way,
between ``# --- Name: begin ---`` / ``# --- Name: end ---`` markers, and added to the test that
compares the copies.
"""

from __future__ import annotations

import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from typing import NoReturn

import trio

from ._chat import AsyncChat


class EchoHandler(AsyncChat):
    """Echoes every line (terminated by ``\\n``) back to the peer."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self._pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self._pieces)
        self._pieces.clear()
        self.push(line + b"\n")


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


# Labels for the tasks that trio names after internal functions, by the end of the task's name.
_ROLES = {
    "<init>": "trio's root task",
    "<TrioToken.run_sync_soon task>": "trio's system task",
    "accept_loop": "accept loop: one per listening socket",
    "_serve_one_listener": "accept loop: one per listening socket",
    "AsyncChat._guard": "send loop: the only task that writes to the socket",
}


class TaskTreeTracer(trio.abc.Instrument):
    """Prints trio's live task tree after tasks were spawned or exited (``--trace``).

    The instrument hooks run inside trio's scheduler, so they only note that the tree changed; a
    task of its own (:meth:`run`) prints the tree at most once per *interval* seconds, so a burst
    of connections gives one picture rather than hundreds.

    Args:
        write: called with each picture (several lines, no trailing newline).
        interval: the shortest time between two pictures, in seconds.
    """

    def __init__(self, write: Callable[[str], object], interval: float = 0.2) -> None:
        self._write = write
        self.interval = interval
        self._changed = True
        self._labels: weakref.WeakKeyDictionary[trio.lowlevel.Task, str]
        self._labels = weakref.WeakKeyDictionary()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self._changed = True

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._changed = True

    def label(self, task: trio.lowlevel.Task, text: str) -> None:
        """Show *text* next to *task* in the pictures."""
        self._labels[task] = text

    async def run(self) -> NoReturn:
        """Print the tree whenever it changed, at most once per interval; never returns."""
        self.label(trio.lowlevel.current_task(), "this --trace printer")
        while True:
            await trio.sleep(self.interval)
            if self._changed:
                self._changed = False
                self._write(self.render())

    def render(self) -> str:
        """The current task tree, from trio's root task, as indented text."""
        root = trio.lowlevel.current_root_task()
        assert root is not None
        lines = list(self._task_lines(root, "", ""))
        connections = sum(1 for line in lines if "<- connection" in line)
        title = f"--- task tree: {connections} connection(s) open ---"
        return "\n".join([title, *lines])

    def _task_lines(self, task: trio.lowlevel.Task, first: str, rest: str) -> Iterator[str]:
        note = self._labels.get(task) or next(
            (text for end, text in _ROLES.items() if task.name.endswith(end)), ""
        )
        yield f"{first}{task.name}" + (f"  <- {note}" if note else "")
        nurseries = task.child_nurseries
        for i, nursery in enumerate(nurseries):
            last = i == len(nurseries) - 1
            what = "nursery"
            if task in self._labels and self._labels[task].startswith("connection"):
                what += "  <- AsyncChat.run's: close() cancels it"
            yield f"{rest}{'`-- ' if last else '|-- '}{what}"
            inner = rest + ("    " if last else "|   ")
            children = sorted(nursery.child_tasks, key=lambda t: (t.name, self._labels.get(t, "")))
            for j, child in enumerate(children):
                tail = j == len(children) - 1
                yield from self._task_lines(
                    child,
                    inner + ("`-- " if tail else "|-- "),
                    inner + ("    " if tail else "|   "),
                )

"""The demo handlers behind ``python -m trio_chat`` (the CLI layer: nothing imports this).

* :class:`EchoHandler` for ``echo``;
* :class:`HttpRequestHandler` for ``http``: a verbatim copy of the handler in
  ``examples/http_request_reader.py`` (the migration guide's ported program; the examples are not
  part of the installed package). ``tests/test_cli.py`` fails if the two copies differ;
* :class:`Room` and :class:`Member` for ``chat``: a verbatim copy of the chat room in
  ``examples/chat_room.py``, checked the same way;
* :class:`TaskTreeTracer` for ``--trace``: a ``trio.abc.Instrument`` that prints the live task
  tree as connections come and go.

A demo whose handler lives in ``examples/`` is copied here between ``# --- Name: begin ---`` /
``# --- Name: end ---`` markers and added to the test that compares the copies.
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


# --- Room and Member: begin ---

# One chat line, in bytes. Generous for text (IRC allows 512), small enough that a peer that
# never sends a newline is cut off (FrameTooLongError, logged) after 4 KiB instead of making
# each member hold 64 KiB (the default max_frame_size).
MAX_LINE = 4096

# Nicks: short enough to align in a terminal, long enough for real names (IRC's NICKLEN is 30).
MAX_NICK = 30

# The unread output one member may have before it is cut off: the room pushes every message to
# every member, so without a limit one member that stops reading would make the server hold the
# whole conversation for it. 256 KiB is a few thousand lines of backlog (on top of what the
# kernel's socket buffers hold), far more than a reader that is merely slow ever needs.
MAX_QUEUED_BYTES = 256 * 1024

# A member that sends nothing for 15 minutes is disconnected: otherwise a peer that vanished
# without closing (a laptop lid, a NAT dropping the flow) would keep its nick forever. Clients
# that want to lurk send an empty line now and then.
IDLE_TIMEOUT = 15 * 60.0


class Room:
    """The members by nick, and the one place that writes to many connections at once."""

    def __init__(self) -> None:
        self.connected: set[Member] = set()  # every open connection, with a nick or not yet
        self.members: dict[str, Member] = {}  # those that chose a nick

    def join(self, member: Member, nick: str) -> None:
        self.members[nick] = member
        self.broadcast(f"* {nick} joined", exclude=member)

    def rename(self, member: Member, old: str, new: str) -> None:
        del self.members[old]
        self.members[new] = member
        self.broadcast(f"* {old} is now known as {new}")

    def leave(self, member: Member) -> None:
        self.connected.discard(member)
        nick = member.nick
        if nick is None or self.members.get(nick) is not member:
            return  # never joined (or already left)
        del self.members[nick]
        why = " (cut off: reads too slowly)" if member.cut_off else ""
        self.broadcast(f"* {nick} left{why}")

    def broadcast(self, text: str, *, exclude: Member | None = None) -> None:
        """Say *text* to every member but *exclude*; never blocks, whoever is slow."""
        line = text.encode() + b"\n"
        for member in list(self.members.values()):
            if member is exclude:
                continue
            # push() only queues. Called from another member's task, it counts toward
            # max_queued_bytes: a member that reads too slowly is closed by push() itself
            # (and logged), rather than growing the server's memory or slowing this loop.
            try:
                member.push(line)
            except trio.ClosedResourceError:
                continue  # it is on its way out (/quit, cut off, shutdown): run() will leave()
            if member.closed:
                member.cut_off = True

    def close_all(self, reason: str) -> None:
        """Tell everyone *reason*, then close each connection once its output is sent."""
        self.broadcast(f"* {reason}")
        for member in list(self.connected):
            member.close_when_done()


class Member(AsyncChat):
    """One connection: a nick, then lines that are commands or messages to the room."""

    max_frame_size = MAX_LINE

    def __init__(self, stream: trio.abc.Stream, room: Room) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.room = room
        self.nick: str | None = None  # None until the first line chose one
        self.cut_off = False  # set by the room when max_queued_bytes closed us
        self._pieces: list[bytes] = []

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        # run() returns however the connection ended: /quit, the peer's EOF or reset, the idle
        # timeout, the slow-reader cut-off, a frame too long, the server's shutdown. Leaving
        # the room here, in `finally`, is the one place that covers all of them.
        try:
            await super().run(stream)
        finally:
            self.room.leave(self)

    def handle_connect(self) -> None:
        self.room.connected.add(self)
        self.say("Welcome! Your nick?")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)  # max_frame_size bounds what one line can hold

    def found_terminator(self) -> None:
        line = b"".join(self._pieces).rstrip(b"\r").decode("utf-8", "replace")
        self._pieces.clear()
        if not line:
            return  # a keepalive
        if self.nick is None:
            self.choose_nick(line)
        elif line == "/quit":
            self.say("Bye!")
            self.close_when_done()  # run() then returns, and leaves the room
        elif line == "/who":
            self.say("* here: " + ", ".join(sorted(self.room.members)))
        elif line.startswith("/nick "):
            self.choose_nick(line.removeprefix("/nick ").strip())
        elif line.startswith("/"):
            self.say("* commands: /nick NEW, /who, /quit")
        else:
            self.room.broadcast(f"<{self.nick}> {line}", exclude=self)

    def choose_nick(self, nick: str) -> None:
        if not nick or len(nick) > MAX_NICK or not nick.isprintable() or " " in nick:
            self.say(f"* a nick is 1 to {MAX_NICK} printable characters without spaces")
        elif nick in self.room.members:
            self.say(f"* {nick} is taken, try another")
        elif self.nick is None:
            self.nick = nick
            self.say(f"* hello {nick}; here: " + ", ".join(sorted(self.room.members)))
            self.room.join(self, nick)
        else:
            old, self.nick = self.nick, nick
            self.room.rename(self, old, nick)

    def say(self, text: str) -> None:
        """A line to this member only (from its own task: bounded by out_high_water)."""
        self.push(text.encode() + b"\n")


# --- Room and Member: end ---


# Labels for the tasks that trio names after internal functions, by the end of the task's name.
_ROLES = {
    "<init>": "trio's root task",
    "<TrioToken.run_sync_soon task>": "trio's system task",
    "accept_loop": "accept loop: one per listening socket",
    "_serve_one_listener": "accept loop: one per listening socket",
    "AsyncChat._send_loop": "send loop: writes what other tasks pushed, producers, backlog",
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

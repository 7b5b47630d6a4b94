"""A chat room on trio_chat: the kind of program the library exists for.

Run it, then connect with any line-based client (``nc``, ``telnet``)::

    python examples/chat_room.py --port 7000
    nc 127.0.0.1 7000

The protocol, one line per message (``\\n``; a trailing ``\\r`` is ignored):

* the first line you send is your nick;
* ``/nick NEW`` changes it, ``/quit`` leaves, ``/who`` lists who is here;
* any other line is said to the room, as ``<nick> text``; an empty line is ignored (use it as
  a keepalive);
* the room tells everyone who joins, leaves, renames, and who is cut off.

What it shows: one :class:`trio_chat.AsyncChat` per connection, a shared ``Room`` that pushes
to every member from other members' tasks (``push()`` never blocks, so one slow reader cannot
slow the room: ``max_queued_bytes`` cuts it off instead), limits with reasons, and a graceful
shutdown on Ctrl-C or SIGTERM that says goodbye before closing.

``python -m trio_chat chat`` serves the same ``Room`` and ``Member`` (a test keeps the two copies
identical).
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from functools import partial

import trio

import trio_chat
from trio_chat import AsyncChat

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


async def serve_room(
    listeners: list[trio.SocketListener],
    *,
    shutdown: trio.Event,
    grace_period: float = trio_chat.DEFAULT_GRACE_PERIOD,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a chat room on *listeners* until *shutdown* is set; then say goodbye and return.

    ``task_status.started()`` gets the listeners, as from :func:`trio_chat.serve_listeners`.
    """
    room = Room()

    async def say_goodbye() -> None:
        # serve_listeners() closes its listeners on the same event, then waits up to
        # grace_period for the connections to end; telling the members and closing them once
        # their output is sent is what lets it finish well before that.
        await shutdown.wait()
        room.close_all("the server is shutting down")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(say_goodbye)
        await trio_chat.serve_listeners(
            partial(Member, room=room),
            listeners,
            max_queued_bytes=MAX_QUEUED_BYTES,
            idle_timeout=IDLE_TIMEOUT,
            shutdown_event=shutdown,
            grace_period=grace_period,
            task_status=task_status,
        )


async def main(host: str, port: int) -> None:
    # Bind first, outside any nursery: a taken port is then a plain OSError for __main__ to
    # report (what serve_tcp() would do inside the nursery, where it would come wrapped).
    listeners = await trio.open_tcp_listeners(port, host=host)
    address, bound_port = listeners[0].socket.getsockname()[:2]
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_room, listeners, shutdown=shutdown))
        print(f"chat room on {address}:{bound_port}; Ctrl-C stops it", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        # The first signal starts a graceful shutdown: serve_room() says goodbye and returns
        # within its grace period, and the nursery ends without being cancelled. Leaving the
        # signal receiver restored the default handlers: a second Ctrl-C stops at once.
        print("shutting down", flush=True)
        shutdown.set()
    print("stopped", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A trio_chat chat room.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7000, help="port (0: any free one)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        trio.run(main, arguments.host, arguments.port)
    except OSError as exc:  # e.g. the port is taken
        raise SystemExit(f"cannot listen on {arguments.host}:{arguments.port}: {exc}") from None

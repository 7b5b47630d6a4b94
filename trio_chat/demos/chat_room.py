"""A chat room on trio_chat: the kind of program the library exists for.

Run it, then connect with any line-based client (``nc``, ``telnet``)::

    python -m trio_chat.demos.chat_room --port 7000
    nc 127.0.0.1 7000

The protocol, one line per message (``\\n``; a trailing ``\\r`` is ignored):

* the first line you send is your nick;
* ``/nick NEW`` changes it, ``/quit`` leaves, ``/who`` lists who is here;
* any other line is said to the room, as ``<nick> text``; an empty line is ignored (use it as
  a keepalive);
* the room tells everyone who joins, leaves, renames, and who is cut off.

Rules that keep members from passing for one another:

* A nick is 1 to 30 characters: ASCII letters, digits, ``_`` and ``-``, starting with a letter.
  Nicks that differ only in case or in look-alike characters are the same nick (``Alice``,
  ``ALICE`` and ``a1ice`` cannot be in the room together): see :func:`nick_key`.
* Control characters in a message (CR, ESC and the rest of C0 and C1, DEL, the Unicode line
  separators and bidi controls) reach the others as escapes (``\\x0d``, ``\\x1b``, ``\\u202e``):
  a message cannot move a terminal's cursor, overwrite a line, or reorder its own text to look
  like another member's line. See :func:`printable`.

What it shows: one :class:`trio_chat.AsyncChat` per connection, a shared ``Room`` that pushes
to every member from other members' tasks (``push()`` never blocks, so one slow reader cannot
slow the room: ``max_queued_bytes`` cuts it off instead), limits with reasons, and a graceful
shutdown on Ctrl-C or SIGTERM that says goodbye before closing.

Past one process: ``--redis URL`` shares the room through Redis pub/sub
(:mod:`trio_chat.demos.chat_redis`, ``pip install "trio-chat[redis]"``), and ``--workers N``
serves it from N processes on one port (it needs ``--redis``: each process has its own members).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

import trio_chat
from trio_chat import AsyncChat, Worker, WorkerCrashError, open_tcp_listeners_reuseport, run_workers

# --- limits ---

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

# --- what members may send ---

# Characters a terminal acts on instead of showing: the C0 controls (CR returns to the start of
# the line, so "hi\r<alice> ..." overwrites the sender's name; ESC starts cursor and colour
# sequences; BS, TAB, ...), DEL, the C1 controls (0x9b is ESC [ to some terminals), the
# Unicode line and paragraph separators, and the bidi controls that reorder the text around
# them (the "Trojan Source" characters, CVE-2021-42574).
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)

# ASCII only: no Cyrillic a (U+0430) passing for a Latin one. Starting with a letter: a nick never
# looks like a number or a command.
_NICK = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
NICK_RULES = (
    f"a nick is 1 to {MAX_NICK} characters: ASCII letters, digits, _ or -, starting with a letter"
)

# What still looks alike in ASCII once case is folded: 0 and o, 1 and l and i (I and l are one
# glyph in many fonts), and the pairs that read as one letter (rn/m, vv/w).
_LOOK_ALIKE = str.maketrans("01i", "oll")


def printable(text: str) -> str:
    """*text* with every control character shown as an escape: ``\\x1b``, ``\\u202e``."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def nick_problem(nick: str) -> str | None:
    """Why *nick* cannot be a nick (:data:`NICK_RULES`), or None if it can."""
    if len(nick) > MAX_NICK or not _NICK.fullmatch(nick):
        return NICK_RULES
    return None


def nick_key(nick: str) -> str:
    """*nick* as the room compares nicks: two nicks with the same key cannot both be here.

    Case is folded, and characters that look alike are made the same: ``0`` and ``o``;
    ``1``, ``l`` and ``i`` (``I`` and ``l`` look the same in many fonts); ``rn`` and ``m``;
    ``vv`` and ``w``. So ``Alice``, ``ALICE``, ``a1ice`` and ``AIice`` are one nick.
    """
    return nick.lower().replace("rn", "m").replace("vv", "w").translate(_LOOK_ALIKE)


def sorted_nicks(nicks: Iterable[str]) -> list[str]:
    """*nicks* in the order /who lists them: alphabetical, whatever the case."""
    return sorted(nicks, key=str.casefold)


# --- Room and Member ---


class RoomUnavailableError(Exception):
    """A shared room's server cannot be reached (the in-process room never raises it)."""


class Room:
    """The members of this process by nick, and the one place that writes to many connections.

    This is the in-process room, the default. A room shared by several processes
    (:class:`trio_chat.demos.chat_redis.RedisRoom`) is a subclass: it keeps this bookkeeping and
    :meth:`broadcast` for its own members, and sends joins, messages and leaves through Redis.
    """

    def __init__(self) -> None:
        self.connected: set[Member] = set()  # every open connection, with a nick or not yet
        self.members: dict[str, Member] = {}  # by nick_key(): those that chose a nick

    async def join(self, member: Member, nick: str) -> list[str] | None:
        """Give *member* the nick *nick*: the nicks already here, or None if it is taken."""
        key = nick_key(nick)
        if key in self.members:
            return None
        here = self.nicks()
        self.add(member, nick)
        self.broadcast(f"* {nick} joined", exclude=member)
        return here

    async def rename(self, member: Member, nick: str) -> bool:
        """Rename *member* to *nick*; False if another member has it (or a look-alike)."""
        assert member.nick is not None
        old = member.nick
        taken = self.members.get(nick_key(nick))
        if taken is not None and taken is not member:
            return False
        self.remove(member)
        self.add(member, nick)
        self.broadcast(f"* {old} is now known as {nick}")
        return True

    async def say(self, member: Member, text: str) -> None:
        """*member* says *text* to everyone else."""
        self.broadcast(f"<{member.nick}> {text}", exclude=member)

    async def who(self) -> list[str]:
        """The nicks in the room."""
        return self.nicks()

    async def leave(self, member: Member, why: str = "") -> None:
        """*member*'s connection has ended, however it ended; tell the others (and *why*)."""
        self.connected.discard(member)
        if self.remove(member):
            self.broadcast(f"* {member.nick} left{why}")

    # The bookkeeping of this process's members, which every room keeps the same way.

    def add(self, member: Member, nick: str) -> None:
        member.nick = nick
        self.members[nick_key(nick)] = member

    def remove(self, member: Member) -> bool:
        """Forget *member*'s nick; False if it had none here (never joined, or already left)."""
        if member.nick is None or self.members.get(nick_key(member.nick)) is not member:
            return False
        del self.members[nick_key(member.nick)]
        return True

    def nicks(self) -> list[str]:
        return sorted_nicks(m.nick for m in self.members.values() if m.nick)

    def broadcast(self, text: str, *, exclude: Member | None = None) -> None:
        """Say *text* to every member here but *exclude*; never blocks, whoever is slow."""
        # The one place that writes to many connections escapes what it writes: whatever the
        # text came from (a member, a notice, another process through Redis), no control
        # character reaches a member's terminal.
        line = printable(text).encode() + b"\n"
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

    max_frame_size: int | None = MAX_LINE

    def __init__(self, stream: trio.abc.Stream, room: Room) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.room: Room = room
        self.nick: str | None = None  # None until the first line chose one; set by the room
        self.cut_off: bool = False  # set by the room when max_queued_bytes closed us
        self._pieces: list[bytes] = []

    async def connection_lost(self, exc: BaseException | None) -> None:
        # Called once however the connection ended: /quit, the peer's EOF or reset, the idle
        # timeout, the slow-reader cut-off, a line too long, the server's shutdown. Leaving the
        # room here is the one place that covers all of them. (Async, for a room whose leave
        # goes to another process; trio_chat runs it shielded, within a few seconds.)
        await self.room.leave(self, self.why_gone(exc))

    def why_gone(self, exc: BaseException | None) -> str:
        """What the others are told after "left": why the connection ended, if not by choice."""
        if self.cut_off:  # a TooSlowError too, but this one the room caused and knows about
            return " (cut off: reads too slowly)"
        if isinstance(exc, trio.TooSlowError):
            return " (timed out)"
        if isinstance(exc, trio_chat.FrameTooLongError):
            return " (line too long)"
        if isinstance(exc, trio.BrokenResourceError):
            return " (connection lost)"
        return ""

    def handle_connect(self) -> None:
        self.room.connected.add(self)
        self.say("Welcome! Your nick?")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)  # max_frame_size bounds what one line can hold

    async def found_terminator(self) -> None:
        # Async: a nick or /who may ask another process (the Redis room). While it awaits,
        # this connection reads nothing more; every other connection carries on.
        line = b"".join(self._pieces).removesuffix(b"\r").decode("utf-8", "replace")
        self._pieces.clear()
        try:
            await self.obey(line)
        except RoomUnavailableError:
            self.say("* the room cannot be reached right now: try again")

    async def obey(self, line: str) -> None:
        if not line:
            return  # a keepalive
        if self.nick is None:
            await self.choose_nick(line)
        elif line == "/quit":
            self.say("Bye!")
            self.close_when_done()  # run() then returns, and leaves the room
        elif line == "/who":
            self.say("* here: " + ", ".join(await self.room.who()))
        elif line.startswith("/nick "):
            await self.choose_nick(line.removeprefix("/nick ").strip())
        elif line.startswith("/"):
            self.say("* commands: /nick NEW, /who, /quit")
        else:
            await self.room.say(self, line)

    async def choose_nick(self, nick: str) -> None:
        problem = nick_problem(nick)
        if problem is not None:
            self.say(f"* {problem}")  # not the nick itself: it may hold anything
        elif self.nick is None:
            here = await self.room.join(self, nick)
            if here is None:
                self.say(f"* {nick} is taken, try another")
            else:
                self.say(f"* hello {nick}; here: " + ", ".join(here))
        elif not await self.room.rename(self, nick):
            self.say(f"* {nick} is taken, try another")

    def say(self, text: str) -> None:
        """A line to this member only (from its own task: bounded by out_high_water)."""
        self.push(text.encode() + b"\n")


# --- serving ---


@asynccontextmanager
async def open_room(
    redis_url: str | None = None, nick_ttl: float | None = None
) -> AsyncIterator[Room]:
    """The in-process :class:`Room`, or with *redis_url* one shared through Redis (where a
    member's nick outlives its process by *nick_ttl* seconds, default 10)."""
    if redis_url is None:
        yield Room()
        return
    # Imported here: coredis is an optional dependency (pip install "trio-chat[redis]").
    from trio_chat.demos.chat_redis import DEFAULT_NICK_TTL, open_redis_room

    ttl = DEFAULT_NICK_TTL if nick_ttl is None else nick_ttl
    async with open_redis_room(redis_url, nick_ttl=ttl) as room:
        yield room


async def serve_room(
    listeners: list[trio.SocketListener],
    *,
    shutdown: trio.Event,
    room: Room | None = None,
    grace_period: float = trio_chat.DEFAULT_GRACE_PERIOD,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a chat room on *listeners* until *shutdown* is set; then say goodbye and return.

    *room* defaults to a new in-process :class:`Room`. ``task_status.started()`` gets the
    listeners, as from :func:`trio_chat.serve_listeners`.
    """
    room = Room() if room is None else room
    closing = trio.Event()  # serve_listeners()'s shutdown_event: set after the goodbye

    async def say_goodbye() -> None:
        await shutdown.wait()
        # The goodbye is pushed first, then serve_listeners() is told: it stops accepting and
        # closes each connection once its output is sent, so everyone reads the goodbye and
        # then EOF, and the server returns long before the grace period ends.
        room.close_all("the server is shutting down")
        closing.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(say_goodbye)
        await trio_chat.serve_listeners(
            partial(Member, room=room),
            listeners,
            max_queued_bytes=MAX_QUEUED_BYTES,
            idle_timeout=IDLE_TIMEOUT,
            shutdown_event=closing,
            grace_period=grace_period,
            task_status=task_status,
        )


async def main(
    host: str, port: int, redis_url: str | None = None, nick_ttl: float | None = None
) -> None:
    # Bind first, outside any nursery: a taken port is then a plain OSError for run() to
    # report (what serve_tcp() would do inside the nursery, where it would come wrapped).
    listeners = await trio.open_tcp_listeners(port, host=host)
    address, bound_port = listeners[0].socket.getsockname()[:2]
    shutdown = trio.Event()
    async with open_room(redis_url, nick_ttl) as room, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_room, listeners, shutdown=shutdown, room=room))
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


async def worker_main(
    host: str, port: int, redis_url: str | None, nick_ttl: float | None, worker: Worker
) -> None:
    """One of ``--workers N`` processes: the shared room, this process's listener, serve."""
    async with open_room(redis_url, nick_ttl) as room, trio.open_nursery() as nursery:
        listeners = await open_tcp_listeners_reuseport(port, host=host)
        serve = partial(serve_room, listeners, shutdown=worker.shutdown_event, room=room)
        await nursery.start(serve)
        # One write for the whole line: the workers share their standard output, and print()
        # may write the text and its newline separately, interleaving with another worker.
        sys.stdout.write(f"worker {worker.number} (pid {os.getpid()}) serving\n")
        sys.stdout.flush()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A trio_chat chat room.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7000, help="port (0: any free one)")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="share the room through Redis pub/sub, e.g. redis://127.0.0.1:6379/0",
    )
    parser.add_argument(
        "--nick-ttl",
        type=float,
        metavar="SECONDS",
        help="with --redis: how long a nick outlives a process that died (default 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on the port (SO_REUSEPORT; needs --redis)",
    )
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> int:
    """The program: parse *argv*, serve until Ctrl-C or SIGTERM; the exit status."""
    args = parse_args(argv)
    if args.workers < 1:
        print("--workers must be 1 or more", file=sys.stderr)
        return 2
    if args.workers > 1 and args.redis is None:
        print(
            "--workers N needs --redis URL: each worker process has its own members, and only "
            "a shared room lets them talk to each other",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and args.port == 0:
        print(
            "--workers N needs a fixed --port: with 0 each worker would get its own",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.workers == 1:
            trio.run(main, args.host, args.port, args.redis, args.nick_ttl)
        else:
            print(
                f"chat room on {args.host}:{args.port} in {args.workers} worker processes, "
                f"shared through {args.redis}; Ctrl-C stops it",
                flush=True,
            )
            worker = partial(worker_main, args.host, args.port, args.redis, args.nick_ttl)
            run_workers(worker, args.workers)
            print("stopped", flush=True)
    except OSError as exc:  # e.g. the port is taken
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except (RoomUnavailableError, WorkerCrashError) as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run as `python -m`, this file is the module __main__, and chat_redis imports it again
    # as trio_chat.demos.chat_room: two copies of every class (an exception raised by one
    # copy is not caught as the other's). Run the imported copy's run(), so there is one.
    from trio_chat.demos.chat_room import run as run_imported

    sys.exit(run_imported())

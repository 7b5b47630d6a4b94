"""Tutorial step 6: a chat room. Each line a member sends goes to every other member.

    python examples/tutorial/step6_chat.py --port 7000
    nc 127.0.0.1 7000

The first line you send is your nick; every other line is said to the room as ``<nick> text``,
and ``/quit`` leaves. ``examples/chat_room.py`` is the complete program (limits, /nick, /who,
a graceful shutdown).
"""

from __future__ import annotations

from functools import partial

import trio
from run_server import main

import trio_chat


class Room:
    """The members by nick: one room for the whole server, shared by every connection."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}

    def join(self, member: Member, nick: str) -> None:
        member.say(f"* hello {nick}; here: " + ", ".join(sorted(self.members)))
        self.members[nick] = member
        self.broadcast(f"* {nick} joined", sender=member)

    def leave(self, member: Member) -> None:
        if member.nick is not None and self.members.get(member.nick) is member:
            del self.members[member.nick]
            self.broadcast(f"* {member.nick} left")

    def broadcast(self, text: str, *, sender: Member | None = None) -> None:
        for member in list(self.members.values()):
            if member is sender:
                continue
            # This runs in the sender's task. push() to another connection never blocks: it
            # queues the line for that connection's send loop to write, and returns.
            try:
                member.say(text)
            except trio.ClosedResourceError:
                continue  # it is closing: its run() is ending, and will leave the room


class Member(trio_chat.AsyncChat):
    """One connection: a nick first, then lines for the room."""

    def __init__(self, stream: trio.abc.Stream, room: Room) -> None:
        super().__init__(stream)
        self.room = room
        self.nick: str | None = None  # None until the first line
        self.set_terminator(b"\n")
        self.pieces: list[bytes] = []

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        # However the connection ends (/quit, the client hangs up, an error, Ctrl-C), run()
        # ends: leaving the room in `finally` covers every way at once.
        try:
            await super().run(stream)
        finally:
            self.room.leave(self)

    def handle_connect(self) -> None:
        self.say("Welcome! Your nick?")

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces).removesuffix(b"\r").decode("utf-8", "replace")
        self.pieces.clear()
        if self.nick is None:
            if not line or line in self.room.members:
                self.say("* that nick is empty or taken, try another")
            else:
                self.nick = line
                self.room.join(self, line)
        elif line == "/quit":
            self.say("Bye!")
            self.close_when_done()  # run() returns once Bye! is sent, and leaves the room
        elif line:
            self.room.broadcast(f"<{self.nick}> {line}", sender=self)

    def say(self, text: str) -> None:
        self.push(text.encode() + b"\n")


if __name__ == "__main__":
    # One room for the whole server, created once: each connection's Member gets the same one.
    main(partial(Member, room=Room()), "Tutorial step 6: a chat room.")

"""Chat room clients for the tests of trio_chat/demos/chat_room.py and chat_redis.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
from serving_helpers import HOST, LineReader, connect

from trio_chat.demos import chat_room


class Person:
    """A chat client: a socket stream and a line reader."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = LineReader(stream)

    async def say(self, text: str) -> None:
        await self.stream.send_all(text.encode() + b"\n")

    async def hear(self) -> str:
        line = await self.reader.line()
        assert line.endswith(b"\n"), f"connection closed after {line!r}"
        return line[:-1].decode()

    async def hear_eof(self) -> None:
        assert await self.reader.rest() == b""


class Visitors:
    """The clients of one room in a test; :meth:`aclose` closes them all."""

    def __init__(self, port: int, room: chat_room.Room | None = None) -> None:
        self.port = port
        self.room = room  # the room, if the test made it
        self.people: list[Person] = []

    async def arrive(self, stream: trio.SocketStream | None = None) -> Person:
        person = Person(stream if stream is not None else await connect(self.port))
        self.people.append(person)
        assert await person.hear() == "Welcome! Your nick?"
        return person

    async def join(self, nick: str, here: str = "") -> Person:
        person = await self.arrive()
        await person.say(nick)
        assert await person.hear() == f"* hello {nick}; here: {here}"
        return person

    async def aclose(self) -> None:
        for person in self.people:
            await person.stream.aclose()


@asynccontextmanager
async def chat_room_server(
    shutdown: trio.Event | None = None, room: chat_room.Room | None = None
) -> AsyncIterator[Visitors]:
    """Serve a room on 127.0.0.1 for the body; then close the clients and, unless a shutdown
    event was given (the test shuts down), cancel the server."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(
            partial(
                chat_room.serve_room,
                listeners,
                shutdown=shutdown if shutdown is not None else trio.Event(),
                room=room,
            )
        )
        assert started == listeners
        visitors = Visitors(listeners[0].socket.getsockname()[1], room)
        try:
            yield visitors
        finally:
            await visitors.aclose()
            if shutdown is None:
                nursery.cancel_scope.cancel()

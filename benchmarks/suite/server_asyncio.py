"""asyncio streams (``StreamReader.readuntil`` / ``readexactly``), on uvloop with ``--uvloop``."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Final

from suite_common import BACKLOG, HOST, MAX_LINE, READ_SIZE, announce, report, server_args, skip


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reads = total = 0
    while data := await reader.read(READ_SIZE):
        reads += 1
        total += len(data)
    writer.write(report(reads, total))


async def lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    frames = total = 0
    readuntil = reader.readuntil
    while True:
        try:
            line = await readuntil(b"\n")
        except asyncio.IncompleteReadError:
            break
        frames += 1
        total += len(line) - 1
    writer.write(report(frames, total))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    frames = total = 0
    readuntil = reader.readuntil
    while True:
        try:
            line = await readuntil(b"\n")
        except asyncio.IncompleteReadError:
            break
        frames += 1
        total += len(line) - 1
        writer.write(line)
        await writer.drain()
    writer.write(report(frames, total))


async def messages(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    frames = total = 0
    while True:
        try:
            header = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            break
        message = await reader.readexactly(int(header))
        frames += 1
        total += len(message)
    writer.write(report(frames, total))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HANDLERS: Final[dict[str, Handler]] = {
    "sink": sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
}


async def serve(mode: str) -> None:
    handler = HANDLERS[mode]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
            await writer.drain()
        except ConnectionError:
            pass  # the load generator closed first (W6)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0, backlog=BACKLOG, limit=MAX_LINE)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "", uvloop_flag=True)
    try:
        if args.uvloop:
            try:
                uvloop = importlib.import_module("uvloop")
            except ImportError:
                skip("uvloop is not installed (`pip install uvloop`)")
            uvloop.run(serve(args.mode))
        else:
            asyncio.run(serve(args.mode))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

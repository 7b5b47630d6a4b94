"""asyncio streams (``StreamReader.readuntil`` / ``readexactly``), on uvloop with ``--uvloop``.

The protocol workloads: ``readuntil`` for every line or head, ``readexactly`` for every counted
part, ``writer.write`` for every reply then ``await writer.drain()``, as the asyncio docs'
examples do.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Final

from protocols import (
    GREETING,
    MAX_MESSAGE,
    HttpError,
    RespError,
    RespStore,
    SmtpSession,
    array_length,
    bulk_length,
    bulk_payload,
    parse_head,
    respond,
)
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


STORE: Final = RespStore()


async def resp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    readuntil = reader.readuntil
    readexactly = reader.readexactly
    execute = STORE.execute
    while True:
        try:
            line = (await readuntil(b"\r\n"))[:-2]
        except asyncio.IncompleteReadError:
            break
        try:
            if line[:1] == b"*":
                args = []
                for _ in range(array_length(line)):
                    length = bulk_length((await readuntil(b"\r\n"))[:-2])
                    args.append(bulk_payload(await readexactly(length + 2)))
            else:
                args = line.split()
        except RespError as exc:
            writer.write(exc.reply)
            break
        if args:
            writer.write(execute(args))
            await writer.drain()


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        try:
            request = parse_head(head[:-4])
        except HttpError as exc:
            writer.write(exc.response)
            break
        body = await reader.readexactly(request.content_length)
        writer.write(respond(request, body))
        if not request.keep_alive:
            break
        await writer.drain()


async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    session = SmtpSession()
    writer.write(GREETING)
    while not session.closing:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            break
        reply = session.command(line[:-2])
        if session.in_data:
            writer.write(reply)
            frame = await reader.readuntil(b"\r\n.\r\n")
            reply = session.message(frame[:-5])
        writer.write(reply)
        await writer.drain()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HANDLERS: Final[dict[str, Handler]] = {
    "sink": sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
    "resp": resp,
    "http": http,
    "smtp": smtp,
}
# readuntil() refuses a frame longer than the reader's limit (and the reader pauses reading at
# twice the limit): an SMTP message needs a larger one than a line.
LIMITS: Final = {"smtp": MAX_MESSAGE}


async def serve(mode: str, port: int) -> None:
    handler = HANDLERS[mode]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the load generator closed first (W6), or a client broke the protocol
        finally:
            writer.close()

    limit = LIMITS.get(mode, MAX_LINE)
    server = await asyncio.start_server(handle, HOST, port, backlog=BACKLOG, limit=limit)
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
            uvloop.run(serve(args.mode, args.port))
        else:
            asyncio.run(serve(args.mode, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

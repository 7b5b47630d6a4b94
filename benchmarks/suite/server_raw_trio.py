"""A hand-written trio handler: ``receive_some`` and a ``bytes.find`` loop (the floor on trio).

What a careful programmer writes without a framing library: search each read for the terminator,
slice out every complete frame (so each frame exists as a ``bytes`` object, as with the other
servers), keep the unfinished rest for the next read. No framework code runs per frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import trio
from suite_common import BACKLOG, HOST, READ_SIZE, announce, report, server_args


async def sink(stream: trio.SocketStream) -> None:
    reads = total = 0
    while data := await stream.receive_some(READ_SIZE):
        reads += 1
        total += len(data)
    await stream.send_all(report(reads, total))


async def lines(stream: trio.SocketStream) -> None:
    frames = total = 0
    rest = b""
    while data := await stream.receive_some(READ_SIZE):
        if rest:
            data = rest + data
        find = data.find
        pos = 0
        while (end := find(b"\n", pos)) >= 0:
            line = data[pos:end]
            frames += 1
            total += len(line)
            pos = end + 1
        rest = data[pos:]
    await stream.send_all(report(frames, total))


async def echo(stream: trio.SocketStream) -> None:
    frames = total = 0
    rest = b""
    while data := await stream.receive_some(READ_SIZE):
        if rest:
            data = rest + data
        find = data.find
        pos = 0
        replies = []
        while (end := find(b"\n", pos)) >= 0:
            line = data[pos:end]
            frames += 1
            total += len(line)
            replies.append(line + b"\n")
            pos = end + 1
        rest = data[pos:]
        if replies:
            await stream.send_all(replies[0] if len(replies) == 1 else b"".join(replies))
    await stream.send_all(report(frames, total))


async def messages(stream: trio.SocketStream) -> None:
    frames = total = 0
    rest = b""
    need = -1  # payload bytes still wanted; -1: reading a header line
    pieces: list[bytes] = []
    while data := await stream.receive_some(READ_SIZE):
        if rest:
            data, rest = rest + data, b""
        pos, end = 0, len(data)
        while pos < end:
            if need < 0:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    rest = data[pos:]
                    break
                need = int(data[pos:eol])
                pos = eol + 1
                continue
            take = min(need, end - pos)
            pieces.append(data if take == end and pos == 0 else data[pos : pos + take])
            pos += take
            need -= take
            if need == 0:
                message = b"".join(pieces)
                pieces.clear()
                frames += 1
                total += len(message)
                need = -1
    await stream.send_all(report(frames, total))


HANDLERS: Final[dict[str, Callable[[trio.SocketStream], Awaitable[None]]]] = {
    "sink": sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
}


async def serve(mode: str) -> None:
    handler = HANDLERS[mode]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except trio.BrokenResourceError:
            pass  # the load generator closed first (W6); nothing to report to
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handle, 0, host=HOST, backlog=BACKLOG)
        )
        announce(listeners[0].socket.getsockname()[1])


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.mode)


if __name__ == "__main__":
    main()

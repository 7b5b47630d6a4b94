"""trio_chat ``FramedStream``: ``receive_until`` / ``receive_exactly`` (pull style, one frame per
call).

The handler a trio user writes with the documented API: ``await stream.receive_until(b"\\n")``
per line, ``receive_exactly(n)`` after a header, ``send_all`` for the echo. On a trio_chat
without ``FramedStream`` (before issue 4) the server reports itself skipped. If trio_chat gains
a call that hands over every complete frame already buffered (issue 5's idea for W1), add a
second server using it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import trio
from suite_common import BACKLOG, HOST, MAX_LINE, READ_SIZE, announce, report, server_args, skip

import trio_chat

# Any: looked up at run time so this file type-checks before FramedStream exists.
FramedStream: Any = getattr(trio_chat, "FramedStream", None)


async def sink(stream: Any) -> tuple[int, int]:
    reads = total = 0
    while data := await stream.receive_some(READ_SIZE):
        reads += 1
        total += len(data)
    return reads, total


async def lines(stream: Any) -> tuple[int, int]:
    frames = total = 0
    receive_until = stream.receive_until
    try:
        while True:
            line = await receive_until(b"\n", max_bytes=MAX_LINE)
            frames += 1
            total += len(line)
    except trio.EndOfChannel:
        return frames, total


async def echo(stream: Any) -> tuple[int, int]:
    frames = total = 0
    receive_until = stream.receive_until
    send_all = stream.send_all
    try:
        while True:
            line = await receive_until(b"\n", max_bytes=MAX_LINE)
            frames += 1
            total += len(line)
            await send_all(line + b"\n")
    except trio.EndOfChannel:
        return frames, total


async def messages(stream: Any) -> tuple[int, int]:
    frames = total = 0
    try:
        while True:
            header = await stream.receive_until(b"\n", max_bytes=MAX_LINE)
            message = await stream.receive_exactly(int(header))
            frames += 1
            total += len(message)
    except trio.EndOfChannel:
        return frames, total


HANDLERS: Final[dict[str, Callable[[Any], Awaitable[tuple[int, int]]]]] = {
    "sink": sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
}


async def serve(mode: str) -> None:
    handler = HANDLERS[mode]

    async def handle(raw: trio.SocketStream) -> None:
        stream = FramedStream(raw)
        try:
            frames, total = await handler(stream)
            await stream.send_all(report(frames, total))
        except trio.BrokenResourceError:
            pass  # the load generator closed first (W6)
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handle, 0, host=HOST, backlog=BACKLOG)
        )
        announce(listeners[0].socket.getsockname()[1])


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    if FramedStream is None:
        skip("this trio_chat has no FramedStream (added by issue 4)")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.mode)


if __name__ == "__main__":
    main()

"""trio_chat ``FramedStream``: ``receive_frames`` for line streams, ``receive_until`` /
``receive_exactly`` for the rest (pull style).

The handler a trio user writes with the documented API, the fastest call for each workload:
``for line in await stream.receive_frames(b"\\n")`` for bulk lines (W1, W2: every complete
line already buffered per call, one checkpoint per call); ``await stream.receive_until(b"\\n")``
per line for the echo workloads (one line per round trip, so a batch would hold one line
anyway), ``receive_exactly(n)`` after a header (W3), ``send_all`` for the echo. On a trio_chat
without ``FramedStream`` (before issue 4) the server reports itself skipped; on one without
``receive_frames`` the line workloads fall back to ``receive_until``.
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
    receive_frames = stream.receive_frames
    try:
        while True:
            for line in await receive_frames(b"\n", max_bytes=MAX_LINE):
                frames += 1
                total += len(line)
    except trio.EndOfChannel:
        return frames, total


async def lines_one_by_one(stream: Any) -> tuple[int, int]:
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
    # receive_frames() is newer than FramedStream: an older trio_chat reads line by line.
    "lines": lines if hasattr(FramedStream, "receive_frames") else lines_one_by_one,
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

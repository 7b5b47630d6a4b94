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
from protocols import (
    GREETING,
    MAX_COMMAND,
    MAX_HEAD,
    MAX_INLINE,
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

import trio_chat

# Any: looked up at run time so this file type-checks before FramedStream exists.
FramedStream: Any = getattr(trio_chat, "FramedStream", None)
# A peer that ends its input in the middle of a frame, or sends a line that is too long: the
# connection ends (the protocol workloads' clients never do either, but the checks try).
PEER_ERRORS: Final[tuple[type[Exception], ...]] = tuple(
    getattr(trio_chat, name)
    for name in ("IncompleteFrameError", "FrameTooLongError")
    if hasattr(trio_chat, name)
)
QUIET_ENDS: Final[tuple[type[Exception], ...]] = (trio.BrokenResourceError, *PEER_ERRORS)


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


STORE: Final = RespStore()


async def resp(stream: Any) -> None:
    receive_until = stream.receive_until
    receive_exactly = stream.receive_exactly
    execute = STORE.execute
    replies: list[bytes] = []
    try:
        while True:
            line = await receive_until(b"\r\n", max_bytes=MAX_INLINE)
            if line[:1] == b"*":
                args = []
                for _ in range(array_length(line)):
                    header = await receive_until(b"\r\n", max_bytes=MAX_INLINE)
                    args.append(bulk_payload(await receive_exactly(bulk_length(header) + 2)))
                if not args:
                    continue
            else:
                args = line.split()
                if not args:
                    continue
            replies.append(execute(args))
            if not stream.buffered:
                await stream.send_all(b"".join(replies))
                replies.clear()
    except RespError as exc:
        replies.append(exc.reply)
        await stream.send_all(b"".join(replies))
    except trio.EndOfChannel:
        pass


async def http(stream: Any) -> None:
    receive_until = stream.receive_until
    replies: list[bytes] = []
    try:
        while True:
            try:
                request = parse_head(await receive_until(b"\r\n\r\n", max_bytes=MAX_HEAD))
            except HttpError as exc:
                replies.append(exc.response)
                break
            body = await stream.receive_exactly(request.content_length)
            replies.append(respond(request, body))
            if not request.keep_alive:
                break
            if not stream.buffered:
                await stream.send_all(b"".join(replies))
                replies.clear()
    except trio.EndOfChannel:
        pass
    if replies:
        await stream.send_all(b"".join(replies))


async def smtp(stream: Any) -> None:
    receive_until = stream.receive_until
    session = SmtpSession()
    await stream.send_all(GREETING)
    try:
        while not session.closing:
            reply = session.command(await receive_until(b"\r\n", max_bytes=MAX_COMMAND))
            if session.in_data:
                await stream.send_all(reply)
                frame = await receive_until(b"\r\n.\r\n", max_bytes=MAX_MESSAGE)
                reply = session.message(frame)
            await stream.send_all(reply)
    except trio.EndOfChannel:
        pass


Handler = Callable[[Any], Awaitable[tuple[int, int] | None]]
HANDLERS: Final[dict[str, Handler]] = {
    "sink": sink,
    # receive_frames() is newer than FramedStream: an older trio_chat reads line by line.
    "lines": lines if hasattr(FramedStream, "receive_frames") else lines_one_by_one,
    "framed": messages,
    "echo": echo,
    "resp": resp,
    "http": http,
    "smtp": smtp,
}


async def serve(mode: str, port: int) -> None:
    handler = HANDLERS[mode]

    async def handle(raw: trio.SocketStream) -> None:
        stream = FramedStream(raw)
        try:
            counts = await handler(stream)
            if counts is not None:
                await stream.send_all(report(*counts))
        except QUIET_ENDS:
            pass  # the load generator closed first (W6), or a client broke the protocol
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handle, port, host=HOST, backlog=BACKLOG)
        )
        announce(listeners[0].socket.getsockname()[1])


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    if FramedStream is None:
        skip("this trio_chat has no FramedStream (added by issue 4)")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.mode, args.port)


if __name__ == "__main__":
    main()

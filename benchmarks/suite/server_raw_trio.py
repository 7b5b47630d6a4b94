"""A hand-written trio handler: ``receive_some`` and a ``bytes.find`` loop (the floor on trio).

What a careful programmer writes without a framing library: search each read for the terminator,
slice out every complete frame (so each frame exists as a ``bytes`` object, as with the other
servers), keep the unfinished rest for the next read. No framework code runs per frame.

The protocol workloads parse the same way: every complete request in a read is handled, the
replies are joined into one ``send_all``, and an unfinished request waits (without being
parsed again) until as many bytes as it needs have arrived. This file is also the RESP floor to
re-measure against, on its own: ``python benchmarks/suite/server_raw_trio.py --workload resp``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

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
    parse_head,
    respond,
)
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


STORE: Final = RespStore()


class TooLongError(Exception):
    """A line or head longer than the protocol allows: the connection ends."""


def parse_resp(data: bytes, replies: list[bytes]) -> tuple[int, int]:
    """Run every complete command in *data*, appending the replies.

    Returns (bytes used, bytes the next command needs at least: 0 if unknown).
    """
    execute = STORE.execute
    find = data.find
    pos, end = 0, len(data)
    while pos < end:
        eol = find(b"\r\n", pos)
        if eol < 0:
            if end - pos > MAX_INLINE:
                raise TooLongError
            return pos, 0
        if data[pos] != 42:  # not b"*": an inline command
            if args := data[pos:eol].split():
                replies.append(execute(args))
            pos = eol + 2
            continue
        count = array_length(data[pos:eol])
        at = eol + 2
        args = []
        for _ in range(count):
            eol = find(b"\r\n", at)
            if eol < 0:
                if end - at > MAX_INLINE:
                    raise TooLongError
                return pos, 0
            start = eol + 2
            stop = start + bulk_length(data[at:eol])
            if stop + 2 > end:
                return pos, stop + 2 - pos  # this command needs at least that many bytes
            if data[stop : stop + 2] != b"\r\n":
                raise RespError("expected CRLF after a bulk string")
            args.append(data[start:stop])
            at = stop + 2
        pos = at
        if args:
            replies.append(execute(args))
    return pos, 0


async def resp(stream: trio.SocketStream) -> None:
    pieces: list[bytes] = []  # an unfinished command, waiting for ...
    waiting = 0  # ... this many bytes in all
    need = 0
    while data := await stream.receive_some(READ_SIZE):
        if pieces:
            pieces.append(data)
            waiting += len(data)
            if waiting < need:
                continue
            data = b"".join(pieces)
            pieces.clear()
        replies: list[bytes] = []
        try:
            used, need = parse_resp(data, replies)
        except RespError as exc:
            replies.append(exc.reply)
            await stream.send_all(b"".join(replies))
            return
        if used < len(data):
            pieces.append(data[used:] if used else data)
            waiting = len(data) - used
        if replies:
            await stream.send_all(replies[0] if len(replies) == 1 else b"".join(replies))


def parse_http(data: bytes, replies: list[bytes]) -> tuple[int, int, bool]:
    """Answer every complete request in *data*, appending the responses.

    Returns (bytes used, bytes the next request needs at least: 0 if unknown, keep alive).
    """
    find = data.find
    pos, end = 0, len(data)
    while pos < end:
        eoh = find(b"\r\n\r\n", pos)
        if eoh < 0:
            if end - pos > MAX_HEAD:
                raise TooLongError
            return pos, 0, True
        try:
            request = parse_head(data[pos:eoh])
        except HttpError as exc:
            replies.append(exc.response)
            return end, 0, False
        stop = eoh + 4 + request.content_length
        if stop > end:
            return pos, stop - pos, True
        replies.append(respond(request, data[eoh + 4 : stop]))
        pos = stop
        if not request.keep_alive:
            return end, 0, False
    return pos, 0, True


async def http(stream: trio.SocketStream) -> None:
    pieces: list[bytes] = []  # an unfinished request, waiting for ...
    waiting = 0  # ... this many bytes in all
    need = 0
    while data := await stream.receive_some(READ_SIZE):
        if pieces:
            pieces.append(data)
            waiting += len(data)
            if waiting < need:
                continue
            data = b"".join(pieces)
            pieces.clear()
        replies: list[bytes] = []
        used, need, keep_alive = parse_http(data, replies)
        if replies:
            await stream.send_all(replies[0] if len(replies) == 1 else b"".join(replies))
        if not keep_alive:
            return
        if used < len(data):
            pieces.append(data[used:] if used else data)
            waiting = len(data) - used


END_OF_DATA: Final = b"\r\n.\r\n"


async def smtp(stream: trio.SocketStream) -> None:
    session = SmtpSession()
    await stream.send_all(GREETING)
    rest = b""  # an unfinished command line
    pieces: list[bytes] = []  # the message so far, one piece per read: joined once at its end
    size = 0
    tail = b""  # its last 4 bytes: the end of the data may straddle two reads
    while not session.closing and (data := await stream.receive_some(READ_SIZE)):
        if rest:
            data, rest = rest + data, b""
        replies = []
        pos = 0
        while not session.closing:
            if session.in_data:
                # The earliest end: one that starts in the pieces before, or one in this read.
                back = 0
                if tail and (i := (tail + data[pos : pos + 4]).find(END_OF_DATA)) >= 0:
                    back = len(tail) - i  # bytes of the end that are in the pieces
                    end = pos
                else:
                    end = data.find(END_OF_DATA, pos)
                if end < 0:
                    pieces.append(data[pos:] if pos else data)
                    size += len(data) - pos
                    if size > MAX_MESSAGE:
                        raise TooLongError
                    tail = (tail + data[pos:])[-4:]
                    break
                message = b"".join([*pieces, data[pos:end]])
                replies.append(session.message(message[: len(message) - back]))
                pos = end + 5 - back
                pieces.clear()
                size = 0
                tail = b""
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if len(data) - pos > MAX_COMMAND:
                        raise TooLongError
                    rest = data[pos:]
                    break
                replies.append(session.command(data[pos:eol]))
                pos = eol + 2
        if replies:
            await stream.send_all(b"".join(replies))


HANDLERS: Final[dict[str, Callable[[trio.SocketStream], Awaitable[None]]]] = {
    "sink": sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
    "resp": resp,
    "http": http,
    "smtp": smtp,
}


async def serve(mode: str, port: int) -> None:
    handler = HANDLERS[mode]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except (trio.BrokenResourceError, TooLongError):
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
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.mode, args.port)


if __name__ == "__main__":
    main()

"""anyio on the trio backend: ``BufferedByteStream.receive_until`` / ``receive_exactly``."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from suite_common import HOST, MAX_LINE, READ_SIZE, announce, report, server_args, skip

try:
    import anyio
    from anyio.abc import SocketAttribute
    from anyio.streams.buffered import BufferedByteStream
except ImportError:  # pragma: no cover - anyio is optional
    skip("anyio is not installed (`pip install anyio`)")

if TYPE_CHECKING:
    from anyio.abc import SocketStream


async def sink(stream: BufferedByteStream) -> int:
    total = 0
    try:
        while True:
            total += len(await stream.receive(READ_SIZE))
    except anyio.EndOfStream:
        return total


async def lines(stream: BufferedByteStream) -> tuple[int, int]:
    frames = total = 0
    receive_until = stream.receive_until
    try:
        while True:
            line = await receive_until(b"\n", MAX_LINE)
            frames += 1
            total += len(line)
    except anyio.IncompleteRead:
        return frames, total


async def echo(stream: BufferedByteStream) -> tuple[int, int]:
    frames = total = 0
    receive_until = stream.receive_until
    send = stream.send
    try:
        while True:
            line = await receive_until(b"\n", MAX_LINE)
            frames += 1
            total += len(line)
            await send(line + b"\n")
    except anyio.IncompleteRead:
        return frames, total


async def messages(stream: BufferedByteStream) -> tuple[int, int]:
    frames = total = 0
    try:
        while True:
            header = await stream.receive_until(b"\n", MAX_LINE)
            message = await stream.receive_exactly(int(header))
            frames += 1
            total += len(message)
    except anyio.IncompleteRead:
        return frames, total


async def run_sink(stream: BufferedByteStream) -> tuple[int, int]:
    return 0, await sink(stream)


HANDLERS: Final[dict[str, Callable[[BufferedByteStream], Awaitable[tuple[int, int]]]]] = {
    "sink": run_sink,
    "lines": lines,
    "framed": messages,
    "echo": echo,
}


async def serve(mode: str, port: int) -> None:
    handler = HANDLERS[mode]

    async def handle(raw: SocketStream) -> None:
        async with raw:
            stream = BufferedByteStream(raw)
            try:
                frames, total = await handler(stream)
                await stream.send(report(frames, total))
            except anyio.BrokenResourceError:
                pass  # the load generator closed first (W6)

    listener: Any = await anyio.create_tcp_listener(local_host=HOST, local_port=port)
    announce(listener.extra(SocketAttribute.local_port))
    await listener.serve(handle)


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, args.mode, args.port, backend="trio")


if __name__ == "__main__":
    main()

"""Lines per second: trio_chat's ``FramedStream`` vs raw trio, anyio and asyncio, one run.

Peers, each reading every line of the same input with its own "read until a delimiter" call:

* ``trio_chat``: :meth:`trio_chat.FramedStream.receive_until` under ``trio.run`` (one call
  and one checkpoint per line; the reference of the ratios);
* ``tc_frames``: :meth:`trio_chat.FramedStream.receive_frames`, every complete line already
  buffered per call (one checkpoint per call);
* ``tc_iter``: ``async for`` over :meth:`trio_chat.FramedStream.frames` (one checkpoint per
  64 lines or per read);
* ``raw_trio``: ``receive_some`` and a ``bytes.find`` loop in the reading task, as
  ``benchmarks/suite/server_raw_trio.py`` (the floor for anything built on trio);
* ``anyio``: ``anyio.streams.buffered.BufferedByteReceiveStream.receive_until`` under
  ``anyio.run(..., backend="trio")``;
* ``asyncio``: ``asyncio.StreamReader.readuntil`` under ``asyncio.run``.

Sources (``--source``):

* ``memory`` (default): each peer pulls the pre-built 64 KiB chunks from an in-memory source
  stream that checkpoints once per chunk (``trio.lowlevel.checkpoint`` /
  ``anyio.lowlevel.checkpoint``; asyncio's reader is fed one chunk per event-loop turn by a
  feeder task), so the figures measure framing, not I/O;
* ``socketpair``: a plain thread writes the same bytes into one end of a Unix socketpair with
  blocking ``sendall``; the peer reads the other end through its framework's socket stream.

Every timed run checks the line count, the total length of the lines and the last line against
the input. ``asyncio`` returns each line *with* its delimiter (``readuntil``), the others
without; the check accounts for that.

Usage::

    python benchmarks/bench_framed.py [--mib N] [--repeat R] [--line-sizes 32,1024]
        [--source memory|socketpair|both]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import platform
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc
import anyio.lowlevel
import trio
from anyio.streams.buffered import BufferedByteReceiveStream

import trio_chat

MIB = 1024 * 1024
CHUNK = 65536  # one read: trio's and asyncio's default read size, asynchat's buffer size
DELIMITER = b"\n"


@dataclass(frozen=True)
class Input:
    chunks: list[bytes]
    lines: int
    total: int  # bytes of all lines, delimiters excluded
    last: bytes
    line_size: int


@dataclass
class Tally:
    lines: int = 0
    total: int = 0
    last: bytes = b""

    def check(self, data: Input, with_delimiter: bool) -> None:
        extra = len(DELIMITER) * data.lines if with_delimiter else 0
        last = data.last + DELIMITER if with_delimiter else data.last
        if (self.lines, self.total, self.last) != (data.lines, data.total + extra, last):
            raise AssertionError(f"wrong framing: {self} for {data.lines} lines")


def make_input(total_bytes: int, line_size: int) -> Input:
    """Lines of *line_size* bytes (delimiter included), every one different."""
    body = line_size - len(DELIMITER)
    count = total_bytes // line_size
    pad = b"x" * (body - 11)
    lines = [b"%010d:" % i + pad for i in range(count)]
    data = DELIMITER.join(lines) + DELIMITER
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    return Input(chunks, count, sum(map(len, lines)), lines[-1], line_size)


def writer_thread(sock: socket.socket, chunks: Sequence[bytes]) -> threading.Thread:
    def write() -> None:
        with sock:
            for chunk in chunks:
                sock.sendall(chunk)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- trio_chat


class TrioChunkSource(trio.abc.Stream):
    """Hands out pre-built chunks, one per receive_some, with one checkpoint each."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = iter(chunks)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return next(self._chunks, b"")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def trio_chat_lines(stream: trio.abc.Stream, max_line: int) -> Tally:
    framed = trio_chat.FramedStream(stream, max_bytes=max_line)
    receive_until = framed.receive_until
    tally = Tally()
    try:
        while True:
            line = await receive_until(DELIMITER)
            tally.lines += 1
            tally.total += len(line)
            tally.last = line
    except trio.EndOfChannel:
        return tally


async def trio_chat_batches(stream: trio.abc.Stream, max_line: int) -> Tally:
    framed = trio_chat.FramedStream(stream, max_bytes=max_line)
    receive_frames = framed.receive_frames
    tally = Tally()
    line = b""
    try:
        while True:
            for line in await receive_frames(DELIMITER):
                tally.lines += 1
                tally.total += len(line)
            tally.last = line
    except trio.EndOfChannel:
        return tally


async def trio_chat_iter(stream: trio.abc.Stream, max_line: int) -> Tally:
    framed = trio_chat.FramedStream(stream, max_bytes=max_line)
    tally = Tally()
    async for line in framed.frames(DELIMITER):
        tally.lines += 1
        tally.total += len(line)
        tally.last = line
    return tally


async def raw_trio_lines(stream: trio.abc.Stream, max_line: int) -> Tally:
    tally = Tally()
    rest = b""
    lines = total = 0
    last = b""
    # bytes() returns a bytes object itself (no copy); it only narrows the type for mypy.
    while data := bytes(await stream.receive_some(CHUNK)):
        if rest:
            data = rest + data
        find = data.find
        pos = 0
        while (end := find(DELIMITER, pos)) >= 0:
            last = data[pos:end]
            lines += 1
            total += len(last)
            pos = end + 1
        rest = data[pos:]
    tally.lines, tally.total, tally.last = lines, total, last
    return tally


def trio_chat_runner(
    reader: Callable[[trio.abc.Stream, int], Awaitable[Tally]],
) -> Callable[[Input, str], Tally]:
    def run(data: Input, source: str) -> Tally:
        async def main() -> Tally:
            if source == "memory":
                return await reader(TrioChunkSource(data.chunks), data.line_size)
            left, right = socket.socketpair()
            thread = writer_thread(left, data.chunks)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(right))
            tally = await reader(stream, data.line_size)
            thread.join()
            return tally

        return trio.run(main)

    return run


# ------------------------------------------------------------------------------- anyio


class AnyioChunkSource(anyio.abc.ByteReceiveStream):
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = iter(chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        chunk = next(self._chunks, None)
        if chunk is None:
            raise anyio.EndOfStream
        return chunk

    async def aclose(self) -> None:
        pass


async def anyio_lines(stream: anyio.abc.ByteReceiveStream, max_line: int) -> Tally:
    buffered = BufferedByteReceiveStream(stream)
    receive_until = buffered.receive_until
    tally = Tally()
    try:
        while True:
            line = await receive_until(DELIMITER, max_line)
            tally.lines += 1
            tally.total += len(line)
            tally.last = line
    except anyio.IncompleteRead:  # anyio's end of input, even between lines
        return tally


def run_anyio(data: Input, source: str) -> Tally:
    async def main() -> Tally:
        if source == "memory":
            return await anyio_lines(AnyioChunkSource(data.chunks), data.line_size)
        left, right = socket.socketpair()
        thread = writer_thread(left, data.chunks)
        stream = await anyio.abc.UNIXSocketStream.from_socket(right)
        tally = await anyio_lines(stream, data.line_size)
        thread.join()
        return tally

    return anyio.run(main, backend="trio")


# ----------------------------------------------------------------------------- asyncio


async def asyncio_lines(reader: asyncio.StreamReader) -> Tally:
    readuntil = reader.readuntil
    tally = Tally()
    try:
        while True:
            line = await readuntil(DELIMITER)
            tally.lines += 1
            tally.total += len(line)
            tally.last = line
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return tally


def run_asyncio(data: Input, source: str) -> Tally:
    async def main() -> Tally:
        if source == "memory":
            reader = asyncio.StreamReader(limit=max(CHUNK, 2 * data.line_size))

            async def feed() -> None:
                for chunk in data.chunks:
                    reader.feed_data(chunk)
                    await asyncio.sleep(0)  # one chunk per event-loop turn
                reader.feed_eof()

            feeder = asyncio.create_task(feed())
            tally = await asyncio_lines(reader)
            await feeder
            return tally
        left, right = socket.socketpair()
        thread = writer_thread(left, data.chunks)
        reader, writer = await asyncio.open_unix_connection(sock=right)
        tally = await asyncio_lines(reader)
        writer.close()
        thread.join()
        return tally

    return asyncio.run(main())


PEERS: dict[str, tuple[Callable[[Input, str], Tally], bool]] = {
    "trio_chat": (trio_chat_runner(trio_chat_lines), False),
    "tc_frames": (trio_chat_runner(trio_chat_batches), False),
    "tc_iter": (trio_chat_runner(trio_chat_iter), False),
    "raw_trio": (trio_chat_runner(raw_trio_lines), False),
    "anyio": (run_anyio, False),
    "asyncio": (run_asyncio, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mib", type=int, default=8, help="input size per run (MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per peer")
    parser.add_argument("--line-sizes", default="32,1024", help="line sizes incl. the newline")
    parser.add_argument("--source", choices=["memory", "socketpair", "both"], default="memory")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated subset (default: all)"
    )
    args = parser.parse_args()
    sources = ["memory", "socketpair"] if args.source == "both" else [args.source]
    peers = {name: PEERS[name] for name in args.peers.split(",")}

    print(
        f"Python {platform.python_version()}, trio {trio.__version__}, anyio "
        f"{importlib.metadata.version('anyio')}, trio_chat "
        f"{trio_chat.__version__}, {platform.machine()}; {args.mib} MiB per run, "
        f"{CHUNK}-byte chunks, best and median of {args.repeat}"
    )
    header = f"{'source':<11} {'line':>5} {'peer':<10} {'best s':>7} {'lines/s best':>13} "
    print(header + f"{'lines/s median':>15} {'vs trio_chat':>12} {'vs raw_trio':>11}")
    for source in sources:
        for line_size in (int(x) for x in args.line_sizes.split(",")):
            data = make_input(args.mib * MIB, line_size)
            rows: list[tuple[str, float, float]] = []  # name, best, median (seconds)
            for name, (run, with_delimiter) in peers.items():
                run(data, source).check(data, with_delimiter)  # warm-up and verification
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    tally = run(data, source)
                    times.append(time.perf_counter() - start)
                    tally.check(data, with_delimiter)
                rows.append((name, min(times), statistics.median(times)))
            # Ratios of median lines/s, measured in this run: > 1 means faster than the reference.
            medians = {name: data.lines / median for name, _, median in rows}
            for name, best, median in rows:
                ratios = [
                    f"{medians[name] / medians[ref]:.2f}x" if ref in medians else "-"
                    for ref in ("trio_chat", "raw_trio")
                ]
                print(
                    f"{source:<11} {line_size:>5} {name:<10} {best:>7.3f} "
                    f"{data.lines / best:>13,.0f} {data.lines / median:>15,.0f} "
                    f"{ratios[0]:>12} {ratios[1]:>11}"
                )


if __name__ == "__main__":
    main()

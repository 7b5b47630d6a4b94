"""Throughput of the sans-IO ``TerminatorBuffer`` versus the stdlib ``asynchat.handle_read``.

Feeds N MiB of fixed-size lines (31 bytes + ``b"\\n"``, then 30 bytes + ``b"\\r\\n"``) in
fixed-size chunks (64 KiB by default) to:

* ``trio_chat``: a :class:`~trio_chat._buffer.TerminatorBuffer` drained the way
  ``AsyncChat._dispatch`` drains it: ``deliver(collect_incoming_data, found_terminator, 256)``;
* ``next_event``: the same buffer drained one ``next_event()`` at a time, calling
  ``collect_incoming_data`` for every data event and ``found_terminator`` for every
  :class:`~trio_chat._buffer.TerminatorFound` (the general path, which a pull-style driver uses);
* ``asynchat``: a subclass of the reference ``asynchat.async_chat`` whose ``recv`` is replaced
  by a function returning the next chunk, with ``handle_read()`` called once per chunk (no
  socket, no asyncore map entry).

All peers share the same consumer (collect pieces into a list; on the terminator join them into
the line and count it), so the difference is the framing machinery alone. Before timing, one
untimed pass per peer checks the line count and a CRC-32 of every line against the input.

Usage::

    python benchmarks/bench_buffer.py [--mib N] [--repeat R] [--chunk-size BYTES]
        [--terminator {lf,crlf,both}]

``asynchat`` re-copies the unprocessed remainder of its buffer after every line, so its cost per
read grows with (lines per read) x (read size): shrink ``--mib`` for a quick run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import trio

from trio_chat._buffer import END_OF_INPUT, NEED_DATA, TerminatorBuffer

MIB = 1024 * 1024
LINE_SIZE = 32


def _import_asynchat() -> Any:
    """The reference asynchat: the stdlib one before 3.12, ``pyasynchat``'s after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import asynchat  # stdlib < 3.12; provided by the pyasynchat package on 3.12+
        except ImportError:
            return None
    return asynchat


# Any: typeshed only has stubs for the stdlib module on < 3.12.
asynchat: Any = _import_asynchat()


# --------------------------------------------------------------------------------------------
# Input


def make_lines(total_bytes: int, terminator: bytes) -> list[bytes]:
    """Lines of ``LINE_SIZE`` bytes including *terminator*, with content derived from a counter."""
    body = LINE_SIZE - len(terminator)
    # "0000000042:" + hex digits of a multiplicative hash of the counter: every line differs,
    # and neither "\r" nor "\n" can occur in the body.
    hex_digits = body - 11
    mask = (1 << (4 * hex_digits)) - 1
    fmt = b"%010d:%0" + str(hex_digits).encode() + b"x"
    return [fmt % (i, (i * 0x9E3779B97F4A7C15) & mask) for i in range(total_bytes // LINE_SIZE)]


def make_chunks(lines: Sequence[bytes], terminator: bytes, chunk_size: int) -> list[bytes]:
    data = terminator.join(lines) + terminator
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def expected_checksum(lines: Sequence[bytes]) -> int:
    crc = 0
    for line in lines:
        crc = zlib.crc32(line, crc)
    return crc


# --------------------------------------------------------------------------------------------
# The shared asynchat-style consumer


class LineCounter:
    """``collect_incoming_data`` collects pieces; ``found_terminator`` joins and counts them."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.lines = 0
        self.last = b""

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.lines += 1
        self.last = line


class ChecksumLineCounter(LineCounter):
    """As :class:`LineCounter`, plus a CRC-32 of every line (for the untimed verification pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.crc = 0

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.lines += 1
        self.last = line
        self.crc = zlib.crc32(line, self.crc)


# --------------------------------------------------------------------------------------------
# The peers: each feeds every chunk to *consumer* and returns it


def run_deliver(chunks: Sequence[bytes], terminator: bytes, consumer: LineCounter) -> LineCounter:
    """Drive a TerminatorBuffer as ``AsyncChat._dispatch`` does (minus the trio checkpoints)."""
    buf = TerminatorBuffer(terminator)
    feed = buf.feed
    deliver = buf.deliver
    collect = consumer.collect_incoming_data
    found = consumer.found_terminator
    for chunk in chunks:
        feed(chunk)
        while deliver(collect, found, 256) is None:  # 256: AsyncChat's frames per checkpoint
            pass
    buf.feed_eof()
    while deliver(collect, found, 256) is None:
        pass
    return consumer


def run_buffer(chunks: Sequence[bytes], terminator: bytes, consumer: LineCounter) -> LineCounter:
    """Drive a TerminatorBuffer one ``next_event()`` at a time, as a pull-style driver does."""
    buf = TerminatorBuffer(terminator)
    feed = buf.feed
    next_event = buf.next_event
    collect = consumer.collect_incoming_data
    found = consumer.found_terminator
    for chunk in chunks:
        feed(chunk)
        while True:
            event = next_event()
            if type(event) is bytes:
                collect(event)
            elif event is NEED_DATA or event is END_OF_INPUT:
                break
            else:
                found()
    buf.feed_eof()
    while True:
        event = next_event()
        if type(event) is bytes:
            collect(event)
        elif event is END_OF_INPUT:
            break
        else:
            found()
    return consumer


def run_asynchat(chunks: Sequence[bytes], terminator: bytes, consumer: LineCounter) -> LineCounter:
    """Call the reference ``async_chat.handle_read`` once per chunk, with ``recv`` patched."""
    chunk_iter: Iterator[bytes] = iter(chunks)

    def recv(_buffer_size: int) -> bytes:
        return next(chunk_iter)

    chat = ChatLines(consumer, recv, len(chunks[0]) if chunks else 65536)
    chat.set_terminator(terminator)
    handle_read = chat.handle_read
    for _ in range(len(chunks)):
        handle_read()
    return consumer


if asynchat is not None:

    class ChatLines(asynchat.async_chat):  # type: ignore[misc]
        """``async_chat`` with the consumer's hooks and a ``recv`` that needs no socket."""

        def __init__(
            self, consumer: LineCounter, recv: Callable[[int], bytes], read_size: int
        ) -> None:
            # sock=None: no socket is created or touched, and add_channel() (which puts a
            # dispatcher in asyncore.socket_map) is only called for a socket; a private map
            # anyway, so the global one can never see this object.
            super().__init__(sock=None, map={})
            self.ac_in_buffer_size = read_size
            # Instance attributes shadow the class methods: handle_read() calls the very bound
            # methods run_buffer() calls, and dispatcher.recv (which needs a socket) is replaced.
            self.collect_incoming_data = consumer.collect_incoming_data
            self.found_terminator = consumer.found_terminator
            self.recv = recv


PEERS: dict[str, Callable[[Sequence[bytes], bytes, LineCounter], LineCounter]] = {
    "trio_chat": run_deliver,
    "next_event": run_buffer,
    "asynchat": run_asynchat,
}


# --------------------------------------------------------------------------------------------
# Measuring and reporting


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def verify(name: str, chunks: Sequence[bytes], term: bytes, lines: Sequence[bytes]) -> None:
    """One untimed pass with a CRC-32 of every line, checked against the input."""
    want_crc = expected_checksum(lines)
    got = PEERS[name](chunks, term, ChecksumLineCounter())
    assert isinstance(got, ChecksumLineCounter)
    assert got.lines == len(lines), f"{name}: {got.lines} lines, expected {len(lines)}"
    assert got.crc == want_crc, f"{name}: checksum {got.crc:#010x}, expected {want_crc:#010x}"
    assert not got.pieces, f"{name}: {len(got.pieces)} uncollected pieces at the end"
    log(f"  {name}: verified {got.lines} lines, crc32 {got.crc:#010x}")


def measure(
    name: str, chunks: Sequence[bytes], term: bytes, lines: Sequence[bytes], repeat: int
) -> list[float]:
    run = PEERS[name]
    times = []
    for r in range(repeat):
        log(f"  {name} {term!r}: run {r + 1}/{repeat} ...")
        t0 = time.perf_counter()
        got = run(chunks, term, LineCounter())
        elapsed = time.perf_counter() - t0
        assert got.lines == len(lines), f"{name}: {got.lines} lines, expected {len(lines)}"
        assert got.last == (lines[-1] if lines else b"")
        times.append(elapsed)
        log(f"  {name} {term!r}: run {r + 1}/{repeat}: {elapsed:.3f} s")
    return times


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--mib", type=float, default=64, help="MiB of input per run (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per peer (default: %(default)s)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=64 * 1024,
        help="bytes per feed()/recv() (default: %(default)s; a multiple of the 32-byte line "
        "never splits a terminator, try 65521 to exercise held-back prefixes)",
    )
    parser.add_argument(
        "--terminator",
        choices=["lf", "crlf", "both"],
        default="both",
        help="line terminator(s) to run (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.chunk_size < 1 or args.mib <= 0:
        parser.error("--repeat, --chunk-size and --mib must be positive")

    total = int(args.mib * MIB) // LINE_SIZE * LINE_SIZE
    if not total:
        parser.error(f"--mib {args.mib} is less than one {LINE_SIZE}-byte line")
    terminators = {"lf": [b"\n"], "crlf": [b"\r\n"], "both": [b"\n", b"\r\n"]}[args.terminator]
    peers = ["trio_chat", "next_event", "asynchat"]
    if asynchat is None:
        log("asynchat is not importable (Python 3.12+ needs `pip install pyasynchat`): skipped")
        peers.remove("asynchat")

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, {platform.machine()}"
    )
    print(
        f"{total:,} bytes ({total / MIB:g} MiB) of {LINE_SIZE}-byte lines "
        f"in {args.chunk_size:,}-byte chunks, best and median of {args.repeat} runs"
    )
    print()

    rows: list[tuple[str, ...]] = []
    for term in terminators:
        log(f"preparing {total / MIB:g} MiB of {term!r} lines ...")
        lines = make_lines(total, term)
        chunks = make_chunks(lines, term, args.chunk_size)
        for name in peers:
            verify(name, chunks, term, lines)
        results = {name: measure(name, chunks, term, lines, args.repeat) for name in peers}
        for name, times in results.items():
            best, median = min(times), statistics.median(times)
            rows.append(
                (
                    f"``{term!r}``",
                    name,
                    f"{best:.3f}",
                    f"{median:.3f}",
                    fmt_rate(len(lines) / best),
                    fmt_rate(len(lines) / median),
                    f"{total / best / 1e6:,.1f}",
                    f"{total / median / 1e6:,.1f}",
                )
            )
        if "asynchat" in results:
            fast, slow = results["trio_chat"], results["asynchat"]
            rows.append(
                (
                    f"``{term!r}``",
                    "ratio",
                    "",
                    "",
                    f"{min(slow) / min(fast):.2f}x",
                    f"{statistics.median(slow) / statistics.median(fast):.2f}x",
                    "",
                    "",
                )
            )
        del lines, chunks

    header = (
        "terminator",
        "peer",
        "best s",
        "median s",
        "lines/s (best)",
        "lines/s (median)",
        "MB/s (best)",
        "MB/s (median)",
    )
    print_rst_table(header, rows)
    print()
    print("MB = 10**6 bytes; ratio = trio_chat throughput / asynchat throughput.")
    return 0


def print_rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A reStructuredText simple table (pasted as is into docs/performance.rst)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(rule)
    print(line(header))
    print(rule)
    for row in rows:
        print(line(row))
    print(rule)


if __name__ == "__main__":
    sys.exit(main())

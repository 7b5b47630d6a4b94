"""Attacks on FramedStream: peers that trickle, send endless frames or garbage, reset; callers
that cancel every call (issue 10).

What a pull-style handler relies on: ``frame_timeout`` cuts a trickled frame and nothing else,
``max_bytes`` bounds what one frame can hold, no byte is ever lost (not by an error, not by a
cancellation), and the frames are the same however the input was chunked.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import struct
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_chat import Delimiter, FramedStream, FrameTooLongError, IncompleteFrameError
from trio_chat.testing import byte_by_byte, every_split, open_peer

TIMEOUT = 30  # seconds; the bound of every test that runs on the real clock (a loaded CI)
LOCALHOST = "127.0.0.1"

DELIMITERS: dict[str, Any] = {
    "bytes": b"\r\n",
    "tuple": (b"\r\n", b"\n"),
    "regex": re.compile(rb"\r?\n"),
}


async def receive(framed: FramedStream, how: str) -> bytes | list[bytes]:
    """One frame the way *how* names: a delimiter kind, ``exactly`` or ``frames``."""
    if how == "exactly":
        return await framed.receive_exactly(1000)
    if how == "frames":
        return await framed.receive_frames(b"\r\n", max_frames=1)
    return await framed.receive_until(DELIMITERS[how])


HOWS = [*DELIMITERS, "exactly", "frames"]


async def rest(framed: FramedStream) -> bytes:
    """Everything still readable: the buffered bytes, then the wrapped stream until EOF."""
    out = bytearray()
    while data := await framed.receive_some():
        out += data
    return bytes(out)


# ------------------------------------------------------------------------- trickling peers


async def trickle(stream: trio.abc.SendStream, data: bytes, every: float) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for byte in data:
            await stream.send_all(bytes([byte]))
            await trio.sleep(every)


@pytest.mark.parametrize("how", HOWS)
async def test_frame_timeout_cuts_a_byte_at_a_time_and_keeps_the_bytes(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    framed.frame_timeout = 30.0
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, client, b"y" * 999, 5.0)  # never a whole frame
            started = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await receive(framed, how)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
        assert 30.0 <= elapsed <= 35.0  # from the first byte
        assert framed.buffered == 6  # a byte at 0, 5, ..., 25 s: every one stays readable
        await client.aclose()
        assert await rest(framed) == b"y" * 6


@pytest.mark.parametrize("how", HOWS)
async def test_a_per_call_timeout_does_not_cut_a_trickle_nor_lose_a_byte(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    # What an idle timeout around each call does (no frame_timeout): a byte every 5 s keeps
    # every 10 s bound happy, and each cancelled call gives back what it had taken.
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    frame = b"x" * 1000 if how == "exactly" else b"x" * 100 + b"\r\n"
    got: bytes | list[bytes] | None = None
    cancelled = 0
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, client, frame, 5.0)
            while got is None:
                with trio.move_on_after(10):
                    got = await receive(framed, how)
                cancelled += got is None
    assert cancelled > 10
    expected = frame[:1000] if how == "exactly" else frame[:100]
    assert got == ([expected] if how == "frames" else expected)


@pytest.mark.parametrize("how", HOWS)
async def test_frame_timeout_leaves_the_pause_between_frames_alone(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    framed.frame_timeout = 5.0
    frame = b"x" * 1000 if how == "exactly" else b"abc\r\n"
    expected = [frame[:3]] if how == "frames" else frame[:1000] if how == "exactly" else b"abc"

    async def send_later(delay: float) -> None:
        await trio.sleep(delay)
        await client.send_all(frame)  # a whole frame at once, after a pause

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await client.send_all(frame)
            assert await receive(framed, how) == expected
            # The caller waits for the next frame, and the peer is quiet for a minute.
            nursery.start_soon(send_later, 60)
            assert await receive(framed, how) == expected
            # The caller comes back late; the frame is waiting in the wrapped stream.
            nursery.start_soon(send_later, 0)
            await trio.sleep(60)
            assert await receive(framed, how) == expected


@pytest.mark.parametrize("how", HOWS)
async def test_frame_timeout_leaves_the_pause_after_buffered_frames_alone(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    # ATTACK finding C (REQUESTS.md), fixed in fc36818: a frame served from the buffer left the
    # frame clock running. A client that pipelined two requests in one read, then thinks.
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    framed.frame_timeout = 5.0
    frame = b"x" * 1000 if how == "exactly" else b"abc\r\n"
    with trio.fail_after(1000):
        await client.send_all(frame + frame)  # one read, two frames
        first = await receive(framed, how)
        assert await receive(framed, how) == first  # from the buffer
        await trio.sleep(60)
        await client.send_all(frame)  # a whole frame at once, after a pause
        assert await receive(framed, how) == first


async def test_frame_timeout_cuts_a_trickling_peer_over_loopback() -> None:
    outcome: list[BaseException] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        framed.frame_timeout = 0.3
        try:
            async for line in framed.frames(b"\n"):
                await framed.send_all(line.upper() + b"\n")
        except trio.TooSlowError as exc:
            outcome.append(exc)
        finally:
            await framed.aclose()
            done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
            port = listeners[0].socket.getsockname()[1]
            async with await trio.open_tcp_stream(LOCALHOST, port) as client:
                await client.send_all(b"hi\n")
                assert await client.receive_some() == b"HI\n"
                started = trio.current_time()
                nursery.start_soon(trickle, client, b"y" * 1000, 0.05)
                assert await client.receive_some() == b""  # closed
                assert trio.current_time() - started >= 0.3
            await done.wait()
            nursery.cancel_scope.cancel()
    assert len(outcome) == 1


# ------------------------------------------------------------------- endless frames, garbage


ENDLESS: dict[str, tuple[Any, bytes]] = {
    "bytes": (b"\n", b"x" * (10 << 20)),
    "bytes, prefixes only": (b"\r\n", b"\r" * (10 << 20)),
    "long bytes": (b"--boundary--", b"--boundary-x" * ((10 << 20) // 12)),
    "tuple": ((b"\r\n", b"\n"), b"\r" * (10 << 20)),
    "regex": (re.compile(rb"\r?\n"), b"x" * (10 << 20)),
    "regex, unbounded": (re.compile(rb"\n\n+"), b"\nx" * (5 << 20)),
}


@pytest.mark.parametrize("kind", list(ENDLESS))
async def test_10_mib_without_a_delimiter_raise_frame_too_long_with_bounded_memory(
    kind: str,
) -> None:
    delimiter, data = ENDLESS[kind]
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    max_bytes = framed.max_bytes
    assert max_bytes is not None
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, data)
            with pytest.raises(FrameTooLongError, match="without the terminator"):
                await framed.receive_until(delimiter)
            # The documented bound: about max_bytes + receive_size (twice max_bytes for a regex).
            bound = (2 if isinstance(delimiter, re.Pattern) else 1) * max_bytes + 65536
            assert max_bytes < framed.buffered <= bound + 16
            with pytest.raises(FrameTooLongError):  # it stays too long
                await framed.receive_until(delimiter)
            # Every byte stays readable, in order.
            held = framed.buffered
            assert await framed.receive_some(held) == data[:held]
            await client.aclose()
            assert await rest(framed) == data[held:]


@pytest.mark.parametrize("kind", ["bytes", "tuple", "regex", "long bytes"])
async def test_a_frame_refused_as_too_long_can_be_taken_with_a_higher_limit(kind: str) -> None:
    # A long but legitimate frame: the handler that decides to accept it loses nothing.
    cases: dict[str, tuple[Delimiter, bytes]] = {
        "bytes": (b"\n", b"\n"),
        "tuple": ((b"\r\n", b"\n"), b"\r\n"),
        "regex": (re.compile(rb"\r?\n"), b"\r\n"),
        "long bytes": (b"--end--", b"--end--"),
    }
    delimiter, end = cases[kind]
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    long_frame = bytes(range(256)).replace(b"\n", b"").replace(b"\r", b"") * 400  # 100 KB
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, long_frame + end + b"next" + end)
            with pytest.raises(FrameTooLongError):
                await framed.receive_until(delimiter)
            assert await framed.receive_until(delimiter, max_bytes=200_000) == long_frame
            assert await framed.receive_until(delimiter) == b"next"


async def test_10_mib_without_a_delimiter_over_loopback() -> None:
    outcome: list[BaseException] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        try:
            await framed.receive_until(b"\n")
        except FrameTooLongError as exc:
            outcome.append(exc)
            assert framed.buffered <= 2 * 65536
        finally:
            await framed.aclose()
            done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream(LOCALHOST, port)
            with contextlib.suppress(trio.BrokenResourceError):
                await client.send_all(b"x" * (10 << 20))
            await done.wait()
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert len(outcome) == 1


def random_chunks(rng: random.Random, data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 100, 4096, 65536])
        yield data[pos : pos + size]
        pos += size


@pytest.mark.parametrize("seed", range(4))
async def test_random_garbage_gives_its_frames_then_an_error_and_loses_nothing(
    seed: int,
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(200_000)
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server, max_bytes=600)  # a newline every 256 bytes on average
    frames: list[bytes] = []
    error: Exception | None = None
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for chunk in random_chunks(rng, data):
                    await client.send_all(chunk)
                await client.send_eof()

            nursery.start_soon(send)
            try:
                async for frame in framed.frames(b"\n"):
                    frames.append(frame)
            except (FrameTooLongError, IncompleteFrameError) as exc:
                error = exc
            left = await rest(framed)
    handed = b"".join(frame + b"\n" for frame in frames)
    assert all(len(frame) <= 600 for frame in frames)
    if isinstance(error, IncompleteFrameError):
        assert handed + error.partial + left == data
    else:
        assert handed + left == data
        assert isinstance(error, FrameTooLongError)


# ------------------------------------------------------------------------- resetting peers


async def test_a_peer_that_resets_mid_frame_raises_broken_and_keeps_the_partial_frame() -> None:
    outcome: list[tuple[BaseException, int]] = []
    done = trio.Event()
    partial_frame = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        try:
            await framed.receive_until(b"\n")
        except trio.BrokenResourceError as exc:
            outcome.append((exc, framed.buffered))
        finally:
            await framed.aclose()
            done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream(LOCALHOST, port)
            await client.send_all(b"half a li")
            await trio.sleep(0.05)
            partial_frame.set()
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()  # a reset
            await done.wait()
            nursery.cancel_scope.cancel()
    ((exc, buffered),) = outcome
    assert isinstance(exc, trio.BrokenResourceError)
    assert buffered == len(b"half a li")


# ------------------------------------------------------------------------- every chunking


async def mixed(stream: trio.abc.Stream, log: list[object]) -> None:
    """A protocol that uses every way of receiving: lines, a count, a tuple, a regex, batches."""
    framed = FramedStream(stream)
    header = await framed.receive_until(b"\r\n")
    log.append(header)
    log.append(await framed.receive_exactly(int(header)))
    log.append(await framed.receive_until((b"\r\n", b"\n")))
    log.append(framed.last_delimiter)
    log.append(await framed.receive_until(re.compile(rb";|\n\n")))
    log.append(framed.last_delimiter)
    while True:
        try:
            batch = await framed.receive_frames(b"\n", max_frames=2)
        except trio.EndOfChannel:
            break
        log.extend(batch)
    await framed.send_all(repr(log).encode())


INPUT = b"5\r\nhel\nox\r\nline\n\nthen;a\nb\nc\n"


def all_chunkings(data: bytes) -> Iterator[list[bytes]]:
    yield from every_split(data)
    yield byte_by_byte(data)


async def test_every_chunking_gives_the_same_frames() -> None:
    results = []
    with trio.fail_after(TIMEOUT):
        for chunks in all_chunkings(INPUT):
            log: list[object] = []
            async with open_peer(partial(mixed, log=log)) as peer:
                await peer.send_chunks(chunks)
                await peer.send_eof()
                out = await peer.receive_all_until_eof()
            results.append((chunks, log, out))
    _, log, out = results[0]
    assert log == [b"5", b"hel\no", b"x", b"\r\n", b"line", b"\n\n", b"then;a", b"b", b"c"]
    for chunks, other_log, other_out in results[1:]:
        assert (other_log, other_out) == (log, out), chunks


async def test_two_tasks_receiving_at_once_is_an_error_not_a_mixup() -> None:
    client, server = trio.testing.memory_stream_pair()
    framed = FramedStream(server)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(framed.receive_until, b"\n")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError, match="already receiving"):
                await framed.receive_until(b"\n")
            await client.send_all(b"ok\n")
    assert framed.buffered == 0

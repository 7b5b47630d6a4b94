"""CPython's ``Lib/test/test_asynchat.py``, rewritten for trio.

Mapping from the stdlib test:

* ``echo_server`` (a thread on a blocking socket) is :func:`run_echo_peer`, a trio task on a raw
  ``trio.socket`` listening on 127.0.0.1 port 0. Like the original it reads one byte at a time
  until ``QUIT\\n``, then echoes everything before it back in pieces of ``chunk_size`` bytes
  (every test runs with 1, 2 and 3, where CPython's ``line_terminator_check`` loops over them).
* ``echo_client`` is :class:`EchoClient`, an :class:`trio_chat.AsyncChat` over
  ``trio.open_tcp_stream("127.0.0.1", port)`` that collects frames into ``contents``.
* ``asyncore.loop(count=300, timeout=.01)`` becomes "run until the connection ends", in two ways
  (parametrized as ``ending``): ``"peer_eof"``, as in CPython, the peer closes after echoing and
  the client's default ``handle_close()`` ends ``run()``; ``"client_close"``, the client waits
  (bounded) until the expected frames are collected, signalled by a ``trio.Event`` set from the
  hooks, and then calls ``close()``; the peer must then see EOF.
* Differential check: the pieces the peer really sent are replayed into the stdlib
  ``asynchat.async_chat.handle_read`` (its ``recv`` returns them one by one), and its frames must
  equal both CPython's expected list and what the trio client collected. A Hypothesis test does
  the same over a scripted in-memory stream for arbitrary data, chunking and terminators.

Deliberate differences from asynchat (tested here as such):

* on EOF, a held-back possible terminator prefix is handed to ``collect_incoming_data`` (asynchat
  leaves it in ``ac_in_buffer`` and drops it);
* the default ``handle_close()`` flushes queued output and then closes;
* ``push()`` snapshots a bytearray; ``set_terminator`` rejects ``str``; ``simple_producer``
  rejects ``buffer_size < 1``; ``find_prefix_at_end(x, b"")`` is 0 (asynchat: -1).
"""

from __future__ import annotations

import functools
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import AsyncChat, find_prefix_at_end, simple_producer

# The terminator kinds asynchat knows (trio_chat.Terminator also has tuples and regexes).
Terminator: TypeAlias = "bytes | int | None"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import asynchat
    except ImportError:  # Python 3.12+ without the pyasynchat backport
        HAVE_ASYNCHAT = False
    else:
        HAVE_ASYNCHAT = True

needs_asynchat = pytest.mark.skipif(not HAVE_ASYNCHAT, reason="the asynchat module is missing")

HOST = "127.0.0.1"
SERVER_QUIT = b"QUIT\n"
TIMEOUT = 10  # seconds, for a whole test
WAIT_FOR_FRAMES = 5  # seconds the "client_close" ending waits for the expected frames
MAX_PEER_BYTES = 1 << 16  # bound of every loop in the echo peer

Ending = Literal["peer_eof", "client_close"]

CHUNK_SIZES = pytest.mark.parametrize("chunk_size", [1, 2, 3])
ENDINGS = pytest.mark.parametrize("ending", ["peer_eof", "client_close"])

# The inputs and expected lists of CPython's test_asynchat.py.
LINE_FRAMES = [b"hello world", b"I'm not dead yet!"]
NUMERIC_DATA = b"hello world, I'm not dead yet!\n"
PRODUCER_DATA = b"hello world\nI'm not dead yet!\n"
EMPTY_LINE_DATA = b"hello world\n\nI'm not dead yet!\n"
EMPTY_LINE_FRAMES = [b"hello world", b"", b"I'm not dead yet!"]
PUSH_DATA = b"bytes\n"
PUSH_FRAMES = [b"bytes", b"bytes", b"bytes"]


# ---------------------------------------------------------------------------------- echo peer


@dataclass
class EchoPeer:
    """What the echo peer saw and did."""

    port: int
    chunk_size: int
    received: bytes = b""  # everything read before the echo
    sent_pieces: list[bytes] = field(default_factory=list)
    after_echo: bytes = b""  # anything read after the echo (must stay empty)
    saw_eof: bool = False
    send_failed: bool = False


async def run_echo_peer(
    chunk_size: int,
    *,
    stop_at_quit: bool = True,
    close_after_echo: bool = True,
    task_status: trio.TaskStatus[EchoPeer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """CPython's ``echo_server`` on a raw trio socket; serves one connection.

    Reads one byte at a time until ``QUIT\\n`` (or, with ``stop_at_quit=False``, until EOF),
    echoes what it read minus ``QUIT\\n`` in pieces of *chunk_size* bytes, then closes (or, with
    ``close_after_echo=False``, first waits for the client's EOF).
    """
    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with listener:
        await listener.bind((HOST, 0))
        listener.listen(1)
        port: int = listener.getsockname()[1]
        peer = EchoPeer(port=port, chunk_size=chunk_size)
        task_status.started(peer)
        conn, _ = await listener.accept()
    with conn:
        # Without it, Nagle's algorithm and delayed ACKs make 1-byte pieces take ~40 ms each.
        conn.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        await _peer_receive(conn, peer, stop_at_quit=stop_at_quit)
        await _peer_echo(conn, peer, peer.received.replace(SERVER_QUIT, b""))
        if not close_after_echo and not peer.saw_eof:
            await _peer_wait_eof(conn, peer)


async def _peer_receive(
    conn: trio.socket.SocketType, peer: EchoPeer, *, stop_at_quit: bool
) -> None:
    for _ in range(MAX_PEER_BYTES):
        if stop_at_quit and peer.received.endswith(SERVER_QUIT):
            return
        data = await conn.recv(1)
        if not data:
            peer.saw_eof = True
            return
        peer.received += data
    raise AssertionError(f"the echo peer read {MAX_PEER_BYTES} bytes without QUIT or EOF")


async def _peer_echo(conn: trio.socket.SocketType, peer: EchoPeer, echo: bytes) -> None:
    pos = 0
    try:
        for _ in range(len(echo)):  # each send() moves at least one byte
            if pos >= len(echo):
                break
            sent = await conn.send(echo[pos : pos + peer.chunk_size])
            peer.sent_pieces.append(echo[pos : pos + sent])
            pos += sent
            await trio.sleep(0.001)  # as CPython's server: let the pieces arrive one by one
    except OSError:
        # As in CPython: after close_when_done() the client is gone, and sending may fail.
        peer.send_failed = True


async def _peer_wait_eof(conn: trio.socket.SocketType, peer: EchoPeer) -> None:
    for _ in range(MAX_PEER_BYTES):
        data = await conn.recv(4096)
        if not data:
            peer.saw_eof = True
            return
        peer.after_echo += data
    raise AssertionError("the echo peer never saw the client's EOF")


# ------------------------------------------------------------------------------------ clients


class EchoClient(AsyncChat):
    """CPython's ``echo_client``: collects each frame into ``contents``.

    ``done`` is set once ``want_frames`` frames and ``want_tail`` bytes of an unfinished frame
    were collected (so a test can wait for the data, then close).
    """

    def __init__(self, terminator: Terminator, *, want_frames: int = 0, want_tail: int = 0) -> None:
        super().__init__()
        self.contents: list[bytes] = []
        self.buffer = b""
        self.set_terminator(terminator)
        self.want_frames = want_frames
        self.want_tail = want_tail
        self.connected = trio.Event()
        self.done = trio.Event()
        self.peer_closed = False
        self.on_connect: Callable[[EchoClient], None] | None = None

    def _check_done(self) -> None:
        if len(self.contents) >= self.want_frames and len(self.buffer) >= self.want_tail:
            self.done.set()

    def _frame_done(self) -> None:
        self.contents.append(self.buffer)
        self.buffer = b""
        self._check_done()

    def handle_connect(self) -> Awaitable[None] | None:
        self.connected.set()
        if self.on_connect is not None:
            self.on_connect(self)
        return None

    def collect_incoming_data(self, data: bytes) -> None:
        assert type(data) is bytes
        assert data, "collect_incoming_data() must never get empty data"
        self.buffer += data
        self._check_done()

    def found_terminator(self) -> Awaitable[None] | None:
        self._frame_done()
        return None

    def handle_close(self) -> Awaitable[None] | None:
        self.peer_closed = True
        return super().handle_close()


class AsyncHookEchoClient(EchoClient):
    """The same client with ``async def`` hooks (trio_chat awaits them)."""

    async def handle_connect(self) -> None:
        await trio.lowlevel.checkpoint()
        result = super().handle_connect()
        assert result is None

    async def found_terminator(self) -> None:
        await trio.lowlevel.checkpoint()
        self._frame_done()


CLIENT_CLASSES = pytest.mark.parametrize("client_cls", [EchoClient, AsyncHookEchoClient])


if HAVE_ASYNCHAT:

    class StdlibReplayClient(asynchat.async_chat):
        """The stdlib ``echo_client`` fed from a list of pieces instead of a socket.

        ``handle_read()`` calls ``self.recv()``, which here returns the next piece; no socket is
        ever created, so nothing is registered with asyncore.
        """

        ac_in_buffer: bytes  # asynchat's held-back input (missing from typeshed's stub)

        def __init__(self, terminator: Terminator, schedule: Sequence[Terminator] = ()) -> None:
            super().__init__()
            self.contents: list[bytes] = []
            self.buffer = b""
            self._pieces: deque[bytes] = deque()
            self._schedule = list(schedule)
            self.set_terminator(terminator)

        def recv(self, buffer_size: int) -> bytes:
            piece = self._pieces.popleft()
            assert len(piece) <= buffer_size
            return piece

        def collect_incoming_data(self, data: bytes) -> None:
            self.buffer += data

        def found_terminator(self) -> None:
            self.contents.append(self.buffer)
            self.buffer = b""
            if self._schedule:
                self.set_terminator(self._schedule[(len(self.contents) - 1) % len(self._schedule)])

        def replay(self, pieces: Sequence[bytes]) -> None:
            self._pieces.extend(p for p in pieces if p)
            for _ in range(len(self._pieces)):
                self.handle_read()


def stdlib_frames(terminator: Terminator, pieces: Sequence[bytes]) -> tuple[list[bytes], bytes]:
    """The frames and unfinished-frame bytes the stdlib asynchat collects from *pieces*."""
    ref = StdlibReplayClient(terminator)
    ref.replay(pieces)
    return ref.contents, ref.buffer


# ----------------------------------------------------------------------------------- exchange


async def echo_exchange(
    client: EchoClient, chunk_size: int, ending: Ending, push: Callable[[EchoClient], None]
) -> EchoPeer:
    """Connect *client* to a fresh echo peer, queue *push(client)*, run until the end."""
    async with trio.open_nursery() as nursery:
        peer: EchoPeer = await nursery.start(
            functools.partial(run_echo_peer, chunk_size, close_after_echo=(ending == "peer_eof"))
        )
        stream = await trio.open_tcp_stream(HOST, peer.port)
        push(client)
        if ending == "peer_eof":
            await client.run(stream)
        else:
            nursery.start_soon(client.run, stream)
            with trio.move_on_after(WAIT_FOR_FRAMES):
                await client.done.wait()
            client.close()
    return peer


async def check_echo(
    client: EchoClient,
    *,
    terminator: Terminator,
    chunk_size: int,
    ending: Ending,
    push: Callable[[EchoClient], None],
    expected_echo: bytes,
    expected_frames: list[bytes],
    expected_tail: bytes = b"",
) -> EchoPeer:
    """Run one echo exchange and assert what both sides saw, exactly."""
    peer = await echo_exchange(client, chunk_size, ending, push)

    # What CPython asserts: the frames the client collected.
    assert client.contents == expected_frames
    assert client.buffer == expected_tail
    assert client.closed

    # The peer got the request and echoed it in pieces of at most chunk_size bytes.
    assert peer.received == expected_echo + SERVER_QUIT
    assert b"".join(peer.sent_pieces) == expected_echo
    assert all(1 <= len(p) <= chunk_size for p in peer.sent_pieces), peer.sent_pieces
    assert not peer.send_failed
    if ending == "peer_eof":
        assert client.peer_closed, "the client's handle_close() was not called on EOF"
    else:
        assert peer.saw_eof, "the peer did not see EOF after client.close()"
        assert peer.after_echo == b""
        assert not client.peer_closed

    # Differential: the stdlib asynchat, fed the very same pieces, collects the same frames.
    if HAVE_ASYNCHAT:
        assert stdlib_frames(terminator, peer.sent_pieces) == (expected_frames, expected_tail)
    return peer


# ------------------------------------------------------------------- TestAsynchat (echo tests)


@CLIENT_CLASSES
@ENDINGS
@CHUNK_SIZES
@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"qqq"], ids=["LF", "CRLF", "qqq"])
async def test_line_terminator(
    term: bytes, chunk_size: int, ending: Ending, client_cls: type[EchoClient]
) -> None:
    # test_line_terminator1/2/3: one-, two- and three-byte terminators.
    def push(c: EchoClient) -> None:
        c.push(b"hello ")
        c.push(b"world" + term)
        c.push(b"I'm not dead yet!" + term)
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = client_cls(term, want_frames=2)
        await check_echo(
            client,
            terminator=term,
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=b"hello world" + term + b"I'm not dead yet!" + term,
            expected_frames=LINE_FRAMES,
        )
        assert client.get_terminator() == term


@ENDINGS
@CHUNK_SIZES
@pytest.mark.parametrize("termlen", [1, 6])
async def test_numeric_terminator(termlen: int, chunk_size: int, ending: Ending) -> None:
    # test_numeric_terminator1/2: read a fixed number of bytes; the count then stays at 0, which
    # acts as None, so the rest is collected without a frame.
    def push(c: EchoClient) -> None:
        c.push(NUMERIC_DATA)
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(termlen, want_frames=1, want_tail=len(NUMERIC_DATA) - termlen)
        await check_echo(
            client,
            terminator=termlen,
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=NUMERIC_DATA,
            expected_frames=[NUMERIC_DATA[:termlen]],
            expected_tail=NUMERIC_DATA[termlen:],
        )
        assert client.get_terminator() == 0


@ENDINGS
@CHUNK_SIZES
async def test_none_terminator(chunk_size: int, ending: Ending) -> None:
    # test_none_terminator: everything is collected, no frame is ever complete.
    def push(c: EchoClient) -> None:
        c.push(NUMERIC_DATA)
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(None, want_tail=len(NUMERIC_DATA))
        await check_echo(
            client,
            terminator=None,
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=NUMERIC_DATA,
            expected_frames=[],
            expected_tail=NUMERIC_DATA,
        )
        assert client.get_terminator() is None


@ENDINGS
@CHUNK_SIZES
async def test_simple_producer(chunk_size: int, ending: Ending) -> None:
    def push(c: EchoClient) -> None:
        c.push_with_producer(simple_producer(PRODUCER_DATA + SERVER_QUIT, buffer_size=8))

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n", want_frames=2)
        await check_echo(
            client,
            terminator=b"\n",
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=PRODUCER_DATA,
            expected_frames=LINE_FRAMES,
        )


@ENDINGS
@CHUNK_SIZES
async def test_string_producer(chunk_size: int, ending: Ending) -> None:
    # A bytes object given to push_with_producer().
    def push(c: EchoClient) -> None:
        c.push_with_producer(PRODUCER_DATA + SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n", want_frames=2)
        await check_echo(
            client,
            terminator=b"\n",
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=PRODUCER_DATA,
            expected_frames=LINE_FRAMES,
        )


@ENDINGS
@CHUNK_SIZES
async def test_empty_line(chunk_size: int, ending: Ending) -> None:
    # Empty lines are frames of their own (and collect_incoming_data never gets b"").
    def push(c: EchoClient) -> None:
        c.push(EMPTY_LINE_DATA)
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n", want_frames=3)
        await check_echo(
            client,
            terminator=b"\n",
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=EMPTY_LINE_DATA,
            expected_frames=EMPTY_LINE_FRAMES,
        )


@ENDINGS
@CHUNK_SIZES
async def test_push(chunk_size: int, ending: Ending) -> None:
    # Issue #12523: push() raises TypeError for anything but bytes, bytearray and memoryview.
    def push(c: EchoClient) -> None:
        c.push(PUSH_DATA)
        c.push(bytearray(PUSH_DATA))
        c.push(memoryview(PUSH_DATA))
        with pytest.raises(TypeError, match="'int'"):
            c.push(10)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'str'"):
            c.push("unicode")  # type: ignore[arg-type]
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n", want_frames=3)
        await check_echo(
            client,
            terminator=b"\n",
            chunk_size=chunk_size,
            ending=ending,
            push=push,
            expected_echo=PUSH_DATA * 3,
            expected_frames=PUSH_FRAMES,
        )


@CHUNK_SIZES
@pytest.mark.parametrize("when", ["before_run", "in_handle_connect", "while_running"])
async def test_close_when_done(chunk_size: int, when: str) -> None:
    # The peer reads until EOF: it must get exactly what was queued before close_when_done(),
    # then EOF; only then does it try to echo (as CPython's start_resend_event arranges), to a
    # client that is gone, so the client collects nothing.
    request = b"hello world\nI'm not dead yet!\n"

    def push_and_close(c: EchoClient) -> None:
        c.push(request)
        c.push(SERVER_QUIT)
        c.close_when_done()
        with pytest.raises(trio.ClosedResourceError):
            c.push(b"too late\n")
        with pytest.raises(trio.ClosedResourceError):
            c.push_with_producer(simple_producer(b"too late\n"))

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n")
        async with trio.open_nursery() as nursery:
            peer: EchoPeer = await nursery.start(
                functools.partial(run_echo_peer, chunk_size, stop_at_quit=False)
            )
            stream = await trio.open_tcp_stream(HOST, peer.port)
            if when == "before_run":
                push_and_close(client)
                await client.run(stream)
            elif when == "in_handle_connect":
                client.on_connect = push_and_close
                await client.run(stream)
            else:
                nursery.start_soon(client.run, stream)
                await client.connected.wait()
                push_and_close(client)

    assert peer.saw_eof
    assert peer.received == request + SERVER_QUIT
    assert client.contents == []
    assert client.buffer == b""
    assert client.closed
    assert not client.peer_closed
    with pytest.raises(trio.ClosedResourceError):
        client.push(b"after the end\n")


# ------------------------------------------------------------ trio_chat's deliberate differences


@CHUNK_SIZES
async def test_eof_hands_over_held_back_prefix(chunk_size: int) -> None:
    # The echo ends in "qq", a prefix of the terminator b"qqq". asynchat keeps it in ac_in_buffer
    # and never collects it; trio_chat hands it to collect_incoming_data at EOF.
    def push(c: EchoClient) -> None:
        c.push(b"hello worldqqqtailqq")
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"qqq")
        peer = await echo_exchange(client, chunk_size, "peer_eof", push)

    assert client.contents == [b"hello world"]
    assert client.buffer == b"tailqq"
    assert client.peer_closed
    if HAVE_ASYNCHAT:
        ref = StdlibReplayClient(b"qqq")
        ref.replay(peer.sent_pieces)
        assert ref.contents == [b"hello world"]
        assert (ref.buffer, ref.ac_in_buffer) == (b"tail", b"qq")


class ReplyClient(EchoClient):
    """Answers each line with ``pong``, and says ``bye`` when the peer half-closes."""

    def found_terminator(self) -> Awaitable[None] | None:
        self._frame_done()
        self.push(b"pong\n")
        return None

    def handle_close(self) -> Awaitable[None] | None:
        self.push(b"bye\n")
        return super().handle_close()


async def test_default_handle_close_flushes_output() -> None:
    # The peer sends two lines and half-closes; the default handle_close() still sends what was
    # queued (asynchat's closes at once), then closes.
    result: list[bytes] = []
    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with trio.fail_after(TIMEOUT), listener:
        await listener.bind((HOST, 0))
        listener.listen(1)
        port: int = listener.getsockname()[1]
        client = ReplyClient(b"\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_half_closing_peer, listener, b"ping\nping\n", result)
            await client.run(await trio.open_tcp_stream(HOST, port))

    assert client.contents == [b"ping", b"ping"]
    assert client.peer_closed
    assert b"".join(result) == b"pong\npong\nbye\n"


async def _half_closing_peer(
    listener: trio.socket.SocketType, request: bytes, result: list[bytes]
) -> None:
    """Send *request*, shut down the writing side, and read the reply until EOF."""
    conn, _ = await listener.accept()
    with conn:
        pos = 0
        for _ in range(len(request)):
            if pos >= len(request):
                break
            pos += await conn.send(request[pos:])
        conn.shutdown(trio.socket.SHUT_WR)
        for _ in range(MAX_PEER_BYTES):
            data = await conn.recv(4096)
            if not data:
                return
            result.append(data)
        raise AssertionError("the client never closed")


@CHUNK_SIZES
async def test_push_snapshots_bytearray(chunk_size: int) -> None:
    # push() queues the data as it is now (asynchat would send the mutated bytearray).
    def push(c: EchoClient) -> None:
        data = bytearray(PUSH_DATA)
        c.push(data)
        data[:] = b"XXXXX\n"
        c.push(SERVER_QUIT)

    with trio.fail_after(TIMEOUT):
        client = EchoClient(b"\n", want_frames=1)
        await check_echo(
            client,
            terminator=b"\n",
            chunk_size=chunk_size,
            ending="peer_eof",
            push=push,
            expected_echo=PUSH_DATA,
            expected_frames=[b"bytes"],
        )


# ---------------------------------------------------------------- Hypothesis differential check


class ScriptedStream(trio.abc.Stream):
    """Returns the given pieces from ``receive_some`` one by one, then EOF; records sends."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = deque(p for p in pieces if p)
        self.sent = bytearray()
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError
        if not self._pieces:
            return b""
        piece = self._pieces.popleft()
        assert max_bytes is None or len(piece) <= max_bytes
        return piece

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class SwitchingClient(EchoClient):
    """Sets the next terminator of *schedule* (cyclically) from each ``found_terminator``."""

    def __init__(self, terminator: Terminator, schedule: Sequence[Terminator]) -> None:
        super().__init__(terminator)
        self._schedule = list(schedule)

    def found_terminator(self) -> Awaitable[None] | None:
        self._frame_done()
        if self._schedule:
            self.set_terminator(self._schedule[(len(self.contents) - 1) % len(self._schedule)])
        return None


def split(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    """Cut *data* into pieces of the given sizes, used cyclically."""
    pieces = []
    pos = 0
    for i in range(len(data)):  # every piece has at least one byte
        if pos >= len(data):
            break
        size = sizes[i % len(sizes)]
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


_symbols = st.sampled_from([b"a", b"b", b"q", b"\r", b"\n"])
_terminators = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=8),
    st.lists(_symbols, max_size=4).map(b"".join),
)


@needs_asynchat
@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(_symbols, max_size=80).map(b"".join),
    sizes=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=16),
    first=_terminators,
    schedule=st.lists(_terminators, max_size=4),
)
async def test_differential_against_stdlib_asynchat(
    data: bytes, sizes: list[int], first: Terminator, schedule: list[Terminator]
) -> None:
    pieces = split(data, sizes)
    assert b"".join(pieces) == data
    with trio.fail_after(TIMEOUT):
        client = SwitchingClient(first, schedule)
        stream = ScriptedStream(pieces)
        await client.run(stream)
    assert stream.closed
    assert client.peer_closed

    ref = StdlibReplayClient(first, schedule)
    ref.replay(pieces)
    assert client.contents == ref.contents
    # The one deliberate difference: the held-back terminator prefix is collected at EOF.
    assert client.buffer == ref.buffer + ref.ac_in_buffer
    assert client.get_terminator() == ref.get_terminator()


# ------------------------------------------------------------------------ TestHelperFunctions


@pytest.mark.parametrize(
    ("haystack", "needle", "expected"),
    [
        # CPython's cases (which pass str; trio_chat works on bytes)
        (b"qwerty\r", b"\r\n", 1),
        (b"qwertydkjf", b"\r\n", 0),
        # more
        (b"", b"\r\n", 0),
        (b"\r", b"\r\n", 1),
        (b"abcq", b"qqq", 1),
        (b"abcqq", b"qqq", 2),
        (b"qq", b"qqq", 2),
        (b"abab", b"ababc", 4),
        (b"xaba", b"abab", 3),
        (b"anything", b"\n", 0),
        (b"qwerty\r\n", b"\r\n", 0),  # an exact match is "undefined" in asynchat; both give 0
    ],
)
def test_find_prefix_at_end(haystack: bytes, needle: bytes, expected: int) -> None:
    assert find_prefix_at_end(haystack, needle) == expected
    if HAVE_ASYNCHAT:
        assert asynchat.find_prefix_at_end(haystack, needle) == expected  # type: ignore[attr-defined]


def test_find_prefix_at_end_empty_needle() -> None:
    # asynchat returns -1 here (its loop starts at len(needle) - 1); trio_chat says 0.
    assert find_prefix_at_end(b"abc", b"") == 0


@needs_asynchat
@settings(max_examples=300, deadline=None)
@given(
    haystack=st.lists(_symbols, max_size=12).map(b"".join),
    needle=st.lists(_symbols, min_size=1, max_size=6).map(b"".join),
)
def test_find_prefix_at_end_matches_stdlib(haystack: bytes, needle: bytes) -> None:
    expected: int = asynchat.find_prefix_at_end(haystack, needle)  # type: ignore[attr-defined]
    assert find_prefix_at_end(haystack, needle) == expected


# --------------------------------------------------------------------- simple_producer (units)


def produce_all(more: Callable[[], bytes], limit: int = 1000) -> list[bytes]:
    """Call *more* until it returns b"" (bounded); return the pieces including that b""."""
    pieces = []
    for _ in range(limit):
        piece = more()
        pieces.append(piece)
        if not piece:
            return pieces
    raise AssertionError(f"producer not exhausted after {limit} calls")


@pytest.mark.parametrize(
    ("data", "buffer_size", "expected"),
    [
        (
            PRODUCER_DATA + SERVER_QUIT,
            8,
            [
                b"hello wo",
                b"rld\nI'm ",
                b"not dead",
                b" yet!\nQU",
                b"IT\n",
                b"",
            ],
        ),
        (b"abcdefgh", 4, [b"abcd", b"efgh", b""]),
        (b"abc", 1, [b"a", b"b", b"c", b""]),
        (b"abc", 512, [b"abc", b""]),
        (b"", 8, [b""]),
        (b"x" * 1000, 512, [b"x" * 512, b"x" * 488, b""]),
    ],
)
def test_simple_producer_pieces(data: bytes, buffer_size: int, expected: list[bytes]) -> None:
    p = simple_producer(data, buffer_size=buffer_size)
    assert p.buffer_size == buffer_size
    assert p.data == data
    assert produce_all(p.more) == expected
    assert p.data == b""
    assert p.more() == b""  # stays exhausted
    if HAVE_ASYNCHAT:
        assert produce_all(asynchat.simple_producer(data, buffer_size).more) == expected


def test_simple_producer_default_buffer_size() -> None:
    p = simple_producer(b"y" * 1300)
    assert p.buffer_size == 512
    assert [len(x) for x in produce_all(p.more)] == [512, 512, 276, 0]


def test_simple_producer_remaining_data_matches_stdlib() -> None:
    # asynchat's simple_producer exposes the unproduced rest as .data; so does trio_chat's.
    data = PRODUCER_DATA + SERVER_QUIT
    p = simple_producer(data, buffer_size=8)
    for n in range(8, len(data) + 8, 8):
        p.more()
        assert p.data == data[n:]
    if HAVE_ASYNCHAT:
        ref = asynchat.simple_producer(data, 8)
        for n in range(8, len(data) + 8, 8):
            ref.more()
            assert ref.data == data[n:]  # type: ignore[attr-defined]


def test_simple_producer_copies_mutable_input() -> None:
    data = bytearray(b"abcdef")
    p = simple_producer(data, buffer_size=4)  # type: ignore[arg-type]
    data[:] = b"XXXXXX"
    pieces = produce_all(p.more)
    assert pieces == [b"abcd", b"ef", b""]
    assert all(type(x) is bytes for x in pieces)


@pytest.mark.parametrize("buffer_size", [0, -1])
def test_simple_producer_rejects_buffer_size_below_one(buffer_size: int) -> None:
    # asynchat's would return b"" at once ("exhausted") with data left.
    with pytest.raises(ValueError, match=str(buffer_size)):
        simple_producer(b"abc", buffer_size=buffer_size)


# ----------------------------------------------------------------------------- TestNotConnected


def test_disallow_negative_terminator() -> None:
    # Issue #11259
    client = EchoClient(b"\n")
    with pytest.raises(ValueError, match="-1"):
        client.set_terminator(-1)
    assert client.get_terminator() == b"\n"


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"qqq", 1, 6, None, 0, b""])
def test_get_terminator_returns_what_was_set(term: Terminator) -> None:
    client = EchoClient(b"x")
    client.set_terminator(term)
    assert client.get_terminator() == term
    if HAVE_ASYNCHAT:
        ref = StdlibReplayClient(b"x")
        ref.set_terminator(term)
        assert ref.get_terminator() == term


def test_str_terminator_is_refused() -> None:
    # asynchat (use_encoding=0) would accept "\n" and then never match bytes input.
    client = EchoClient(b"\n")
    with pytest.raises(TypeError, match="'str'"):
        client.set_terminator("\n")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "type_name"), [(10, "int"), ("unicode", "str"), (None, "NoneType"), (1.5, "float")]
)
def test_push_type_checks_not_connected(bad: object, type_name: str) -> None:
    client = EchoClient(b"\n")
    with pytest.raises(TypeError, match=f"'{type_name}'"):
        client.push(bad)  # type: ignore[arg-type]
    # Accepted types, before any connection exists.
    client.push(PUSH_DATA)
    client.push(bytearray(PUSH_DATA))
    client.push(memoryview(PUSH_DATA))
    client.push(b"")


@pytest.mark.parametrize(("bad", "type_name"), [("unicode", "str"), (10, "int")])
def test_push_with_producer_type_checks(bad: object, type_name: str) -> None:
    client = EchoClient(b"\n")
    with pytest.raises(TypeError, match=f"'{type_name}'"):
        client.push_with_producer(bad)  # type: ignore[arg-type]


async def test_close_before_run_closes_stream() -> None:
    # Not connected in the asyncore sense: close() before run() only closes the stream.
    with trio.fail_after(TIMEOUT):
        client_stream, peer_stream = trio.testing.memory_stream_pair()
        client = EchoClient(b"\n")
        client.push(b"never sent\n")
        client.close()
        await client.run(client_stream)
        assert client.closed
        assert await peer_stream.receive_some() == b""

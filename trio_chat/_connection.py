"""The machinery behind one ``AsyncChat``: its life, its two loops, and how it ends.

Task layout of one connection (``await handler.run()``)::

    run()                       one nursery, cancelled by close()
    ├── receive loop            receive_some -> TerminatorBuffer -> hooks (in this task)
    └── send loop               output queue of bytes / producers / markers -> stream.send_all
                                (started the first time it is needed)

``push()`` and friends never block: they append to the output queue (``_output.py``) and count
its bytes. After every hook the receive loop checks that count against ``out_high_water`` and
stops reading until it falls to half of it: that bounds what one read can queue to
``out_high_water`` plus one hook's reply.

One writer at a time (``Output.writing``). While its hooks run, the receive loop owns the right
to write, and right after them it writes their replies itself: a request-reply round trip then
costs one task, as in a hand-written trio handler, instead of a wake-up and a scheduler pass
for a second one. Everything else goes through the send loop: pushes from other tasks,
producers (which may wait on anything, and must not stop the reading), markers, and whatever
is left when the receive loop moves on. It is started lazily, so an idle connection costs one
task, and it parks on a ``ParkingLot`` between bursts. The queue is a ``collections.deque``
rather than a trio memory channel: nothing ever waits on the queue itself (the send loop parks
on its own lot, so ``discard_buffers()`` can drop every item at once), and a channel would add
its state to every idle connection (``docs/design.rst`` has the figures).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
import math
import socket
import ssl
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from ._buffer import END_OF_INPUT, NEED_DATA, TerminatorBuffer
from ._output import CLOSE, Output, Send, StalledError, TLSSwitch
from ._util import peer_name

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._chat import AsyncChat

__all__ = ["CONNECTION_LOST_TIMEOUT", "Connection", "Phase"]

logger: Final = logging.getLogger("trio_chat")

# Frames dispatched from one read between two checkpoints. A single 64 KiB read can hold ~2,000
# short frames. A checkpoint is a pass through trio's scheduler, several times the cost of a
# short frame with asynchat-style hooks: every 256 frames it is a few percent of the time
# (benchmark W1), and other connections wait at most 256 hooks' worth for their turn.
_FRAMES_PER_CHECKPOINT: Final = 256

# How long closing politely may take once everything queued was written (close_when_done()):
# a TLS stream sends close_notify then, so the peer can tell a finished reply from a truncation
# attack; a peer that doesn't read can stall that write. Two seconds: longer than a loopback or
# LAN round trip by far, short enough that a server shutting down is not held up.
_GRACEFUL_CLOSE_TIMEOUT: Final = 2.0

# What a lingering close (see _close_stream) reads and drops at most, in reads of 64 KiB: enough
# for the pipelined requests of any honest client, little enough that a peer that streams on
# cannot keep the connection; the graceful-close timeout bounds the time.
_LINGER_BYTES: Final = 1024 * 1024
_LINGER_READ: Final = 65536
# How long a lingering close waits for more input once the peer has gone quiet: what was in
# flight when we stopped reading arrives within a round trip (well under a millisecond on a
# LAN, rarely over 200 ms across continents); a peer that keeps its side open without sending
# (many clients wait for the server to close first) should not hold the connection for the
# whole graceful-close timeout.
_LINGER_QUIET: Final = 0.2

# How long the replies pushed before a hook raised may take to write when no idle_timeout is
# set: the same two seconds, for the same reasons; the error propagates after it either way.
_ERROR_FLUSH_TIMEOUT: Final = 2.0

#: How long an ``async def connection_lost`` may run (shielded from cancellation) before it is
#: cancelled: it runs while a server may be shutting down, so it must not hold it up for long.
CONNECTION_LOST_TIMEOUT: Final = 5.0


class Phase(enum.Enum):
    """Where a connection is in its life. It only moves forward::

    NEW -> OPEN [-> CLOSE_AFTER_HOOK] -> CLOSING -> FLUSHED -> DONE
    (any phase but DONE) -> CLOSED -> DONE;  NEW -> CLOSING before run()
    """

    NEW = "new"  # run() has not started; pushes wait in the queue
    OPEN = "open"  # reading and writing
    # close_when_done() from another task while an async hook runs: the hook may still push
    # (a request in progress gets its reply), and the close follows when it returns.
    CLOSE_AFTER_HOOK = "close after hook"
    CLOSING = "closing"  # close_when_done() or a hook's error: no more input, flushing output
    FLUSHED = "flushed"  # the close marker was written: the stream is closed politely
    CLOSED = "closed"  # close(), a reset or a timeout: the stream is closed at once
    DONE = "done"  # run() returned


_AFTER_HOOK: Final = Phase.CLOSE_AFTER_HOOK


class Connection:
    """The state and the loops of one :class:`~trio_chat.AsyncChat`, kept apart from it so a
    subclass may use any attribute name.

    Invariants:

    * ``receive_task`` is the task running ``run()``, and ``nursery`` its nursery, exactly
      while it runs; the send loop exists only inside that nursery (``lot`` is its parking lot
      once it started).
    * ``phase`` only moves forward (see :class:`Phase`); pushes are accepted in NEW and OPEN.
    * A CLOSE marker is in the queue from ``close_when_done()`` (phase CLOSING) until the writer
      reaches it (phase FLUSHED).
    * ``error`` is what ``run()`` raises after closing (a hook's exception), ``reason`` what
      ``connection_lost()`` receives (None for an orderly end); both are set once.
    """

    __slots__ = (
        "buffer",
        "error",
        "handler",
        "in_hook",
        "lot",
        "nursery",
        "out",
        "peer",
        "phase",
        "reason",
        "receive_task",
        "stream",
    )

    def __init__(self, handler: AsyncChat, stream: trio.abc.Stream | None) -> None:
        self.handler = handler
        self.stream = stream
        self.buffer = TerminatorBuffer(None, max_frame_size=handler.max_frame_size)
        self.out = Output()
        self.phase = Phase.NEW
        self.receive_task: trio.lowlevel.Task | None = None
        self.nursery: trio.Nursery | None = None
        self.lot: trio.lowlevel.ParkingLot | None = None
        self.error: Exception | None = None
        self.reason: BaseException | None = None
        self.in_hook = False  # the receive loop is awaiting an async hook
        #: The peer's address for log lines, taken when run() starts (after a reset the
        #: socket no longer knows it).
        self.peer = "?"

    # ------------------------------------------------------------ controls (sync)

    def check_open(self, what: str) -> None:
        phase = self.phase
        if phase is _AFTER_HOOK and trio.lowlevel.current_task() is self.receive_task:
            return  # the hook in progress may still answer its request
        if phase is not Phase.OPEN and phase is not Phase.NEW:
            raise trio.ClosedResourceError(f"{what}() on a connection that is closed or closing")

    def push(self, data: bytes) -> None:
        out = self.out
        out.add(data)
        handler = self.handler
        if out.queued > handler.out_high_water:
            # Backpressure after every hook: the receive loop's deliver() stops after this one.
            self.buffer.interrupt()
        limit = handler.max_queued_bytes
        if (
            limit is not None
            and out.queued > limit
            and self.receive_task is not None
            and trio.lowlevel.current_task() is not self.receive_task
        ):
            logger.warning(
                "closing connection to %s: %d bytes of output are waiting, more than "
                "max_queued_bytes=%d (the peer reads too slowly)",
                self.peer,
                out.queued,
                limit,
            )
            self.close(trio.TooSlowError(f"more than max_queued_bytes={limit} queued"))
            return
        if not out.writing and self.nursery is not None:
            out.writing = True
            self.wake_sender()

    def enqueue(self, item: object) -> None:
        """Queue a producer or a marker."""
        self.out.put(item)
        if self.nursery is not None and self.out.claim():
            self.wake_sender()

    def wake_sender(self) -> None:
        """Hand the queue (and the right to write it) to the send loop, starting it once."""
        if self.lot is None:
            assert self.nursery is not None
            self.lot = trio.lowlevel.ParkingLot()
            # Named for what users know: the task tree shows the send loop of an AsyncChat.
            self.nursery.start_soon(self._send_loop, name="trio_chat.AsyncChat._send_loop")
        else:
            self.lot.unpark()

    def close_when_done(self) -> None:
        if self.phase is not Phase.OPEN and self.phase is not Phase.NEW:
            return
        if self.in_hook and trio.lowlevel.current_task() is not self.receive_task:
            self.phase = Phase.CLOSE_AFTER_HOOK  # see Phase
            return
        self._begin_closing()

    def _begin_closing(self) -> None:
        self.phase = Phase.CLOSING
        self.buffer.interrupt()  # input after this is not processed
        self.enqueue(CLOSE)

    def close(self, reason: BaseException | None = None) -> None:
        if self.phase is Phase.DONE or self.phase is Phase.CLOSED:
            return
        if self.reason is None:
            self.reason = reason
        self.phase = Phase.CLOSED
        self.buffer.interrupt()
        self.out.discard()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def discard_buffers(self) -> None:
        self.buffer.clear()
        self.out.discard()

    # ------------------------------------------------------------------ run

    def begin(self) -> None:
        """``run()`` starts, in the task that runs it."""
        self.receive_task = trio.lowlevel.current_task()
        self.peer = peer_name(self.stream)
        if self.phase is Phase.NEW:
            self.phase = Phase.OPEN
        self.buffer.max_frame_size = self.handler.max_frame_size

    def ended_by(self, exc: BaseException) -> None:
        """``run()`` is left by *exc*: cancelled from outside, KeyboardInterrupt, a bug."""
        if self.reason is None:
            # The nursery wraps a cancellation from outside in a group (one Cancelled per task
            # it cancelled): connection_lost() gets the Cancelled itself.
            if isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None:
                while isinstance(exc, BaseExceptionGroup):
                    exc = exc.exceptions[0]
            self.reason = exc

    async def end(self) -> None:
        """``run()`` ends however it ends: close the stream, then ``connection_lost()``."""
        self.nursery = None
        self.receive_task = None
        graceful = self.phase is Phase.FLUSHED
        self.phase = Phase.DONE
        self.out.discard()
        try:
            # self.stream: after start_tls() it is the TLS stream wrapping the original.
            await _close_stream(self.stream, graceful=graceful)
        finally:
            await self._connection_lost()  # even when cancelled from outside

    async def _connection_lost(self) -> None:
        reason = self.error if self.error is not None else self.reason
        try:
            result = self.handler.connection_lost(reason)
            if result is not None and inspect.isawaitable(result):
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CONNECTION_LOST_TIMEOUT
                    await result
        except Exception:
            if reason is None:
                raise
            # Not raised over the exception that ended the connection.
            logger.exception("connection_lost() of the connection to %s failed", self.peer)

    def fail(self, exc: Exception) -> None:
        """A hook raised: write what was pushed before it (bounded), then close and re-raise."""
        # Kept and re-raised by run() after the stream is closed, so a hook's error reaches the
        # caller as itself rather than wrapped in an ExceptionGroup.
        if self.error is None:
            self.error = exc
        if self.phase is Phase.OPEN or self.phase is Phase.CLOSING:
            if self.phase is Phase.OPEN:
                self.phase = Phase.CLOSING
                self.enqueue(CLOSE)
            assert self.nursery is not None
            timeout = self.handler.idle_timeout
            bound = _ERROR_FLUSH_TIMEOUT if timeout is None else timeout
            scope = self.nursery.cancel_scope
            scope.deadline = min(scope.deadline, trio.current_time() + bound)
        elif self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _finish(self) -> None:
        """The close marker was reached: everything before it is written."""
        self.out.pop()
        if self.phase is Phase.CLOSING:
            self.phase = Phase.FLUSHED
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    def _lost(self, exc: BaseException) -> None:
        """Writing failed: the peer reset the connection, or the stream was closed under us."""
        if isinstance(exc, trio.BrokenResourceError):
            logger.debug("connection to %s reset by peer while sending: %r", self.peer, exc)
            self.close(exc)
        else:
            self.close()

    def _stalled(self) -> None:
        timeout = self.handler.idle_timeout
        logger.info(
            "closing connection to %s: no input and a blocked write for %s seconds (idle_timeout)",
            self.peer,
            timeout,
        )
        _reset_on_close(self.stream)
        self.close(trio.TooSlowError(f"a write made no progress for {timeout} seconds"))

    # --------------------------------------------------------------- writing

    def sender(self) -> Send:
        """What writes to the peer now: the stream's ``send_all``, bounded by ``idle_timeout``
        when it is set. Asked for again after a TLS switch, which replaces the stream."""
        stream = self.stream
        assert stream is not None
        if self.handler.idle_timeout is None:
            return stream.send_all  # no wrapper: one coroutine less per write
        return self._send_in_time

    async def _send_in_time(self, data: Any) -> None:
        """Write to the peer; ``idle_timeout`` bounds how long one write may stall."""
        stream = self.stream
        assert stream is not None
        with trio.move_on_after(self.handler.idle_timeout) as scope:  # type: ignore[arg-type]
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise StalledError

    async def _write_own(self) -> None:
        """The receive loop writes what was queued when it began (its hooks' replies, and what
        was already waiting), then settles: pushes other tasks make meanwhile are the send
        loop's, so a steady stream of them cannot keep the receive loop from reading."""
        out = self.out
        self._settled(
            await out.write_queued(self.sender(), self.handler.ac_out_buffer_size, out.queued)
        )

    def _settled(self, head: object) -> None:
        """The receive loop's write ended at *head* (what ``write_queued`` returned): give up
        the right to write, or hand it to the send loop, or end the connection."""
        if head is None:
            self.out.writing = False
        elif head is CLOSE:
            self._finish()
        elif isinstance(head, BaseException):
            self._write_failed(head)
        else:
            # A producer, a TLS switch, or bytes other tasks pushed while we wrote: the send
            # loop owns the right to write now.
            self.wake_sender()

    def _write_failed(self, exc: BaseException) -> None:
        if isinstance(exc, StalledError):
            self._stalled()
        else:
            self._lost(exc)

    async def _send_loop(self) -> None:
        out = self.out
        lot = self.lot
        assert lot is not None
        try:
            while True:
                send = self.sender()
                head = await out.write_queued(send, self.handler.ac_out_buffer_size)
                if isinstance(head, BaseException):
                    self._write_failed(head)
                    return
                if head is None:
                    out.writing = False
                    await lot.park()  # wake_sender() gives the right back
                elif head is CLOSE:
                    self._finish()
                    return
                elif head.__class__ is TLSSwitch:
                    assert isinstance(head, TLSSwitch)
                    head.reached.set()
                    await head.done.wait()
                    out.pop()
                else:
                    out.pop()
                    await out.write_producer(head, send, self.handler.ac_out_buffer_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError, StalledError) as exc:
            self._write_failed(exc)  # writing a producer
        except Exception as exc:  # a producer's error, say
            if self.error is None:
                self.error = exc
            self.close()

    # --------------------------------------------------------------- reading

    async def receive_loop(self) -> None:
        """Read, hand the input to the hooks, write their replies; until the connection ends.

        One loop, one state (``result``: what the last ``deliver()`` returned). NEED_DATA:
        read. A coroutine: an async hook, awaited. None: a batch of frames is done, or a hook
        stopped the dispatch (backpressure, a close): let others run, or wait for the queue to
        drain. END_OF_INPUT: the peer's EOF, ``handle_close()``. After each of them the hooks
        get the buffered input again, and the receive loop writes what they pushed itself.
        """
        handler = self.handler
        buffer = self.buffer
        out = self.out
        if out.items and out.claim():  # pushes (or close_when_done()) before run()
            await self._write_own()
        if self.phase is Phase.OPEN:
            await self._call_hook(handler.handle_connect)
        frame_deadline = math.inf  # when the frame under way must be complete (frame_timeout)
        frames = 0
        result: object = NEED_DATA
        wrote = False
        while self.phase is Phase.OPEN:
            if result is NEED_DATA:
                if out.queued > handler.out_high_water:
                    await out.wait_drained(handler.out_high_water // 2)
                    continue
                idle_timeout = handler.idle_timeout
                deadline = frame_deadline
                if idle_timeout is not None:
                    deadline = min(deadline, trio.current_time() + idle_timeout)
                stream = self.stream  # read each time: start_tls() replaces it
                assert stream is not None
                # Read here, not in a helper coroutine: every idle connection waits in this
                # frame, and a request-reply round trip costs no extra coroutine.
                try:
                    if deadline == math.inf:
                        data = await stream.receive_some(handler.ac_in_buffer_size)
                    else:
                        data = None
                        with trio.move_on_at(deadline):
                            data = await stream.receive_some(handler.ac_in_buffer_size)
                except trio.BrokenResourceError as exc:
                    logger.debug(
                        "connection to %s reset by peer while receiving: %r", self.peer, exc
                    )
                    if self.reason is None:
                        self.reason = exc
                    data = b""
                except trio.ClosedResourceError:
                    # Someone closed our stream under us: end the connection (and the send loop).
                    self.close()
                    return
                if data is None:
                    self._read_timed_out(frame_deadline)
                    return
                if data:
                    buffer.feed(data)
                else:
                    buffer.feed_eof()
            elif result is END_OF_INPUT:
                await self._call_hook(handler.handle_close)
                if self.phase is Phase.OPEN:
                    # handle_close() kept the connection open, for output from other tasks:
                    # it lasts until close() or close_when_done() (which cancel this).
                    await trio.sleep_forever()
                return
            elif result is not None:  # an async hook's coroutine
                await self._await_hook(result)  # type: ignore[arg-type]
                if self.phase is not Phase.OPEN:
                    return
                if out.queued > handler.out_high_water:
                    await out.wait_drained(handler.out_high_water // 2)
            elif out.queued > handler.out_high_water:  # None: a hook stopped the dispatch
                await out.wait_drained(handler.out_high_water // 2)
            elif not wrote:
                await trio.lowlevel.checkpoint()  # a batch of frames done: let others run
            mine = out.claim()
            try:
                result = buffer.deliver(
                    handler.collect_incoming_data, handler.found_terminator, _FRAMES_PER_CHECKPOINT
                )
            except BaseException:
                if mine:
                    self._hand_over()  # what the hooks pushed is still written
                raise
            wrote = mine and bool(out.items)
            if wrote:  # _write_own(), without a coroutine more per round trip
                self._settled(
                    await out.write_queued(self.sender(), handler.ac_out_buffer_size, out.queued)
                )
            elif mine:
                out.writing = False
            frame_timeout = handler.frame_timeout
            if frame_timeout is not None and result is NEED_DATA:
                if not (buffer.frame_started or buffer.buffered):
                    frame_deadline = math.inf
                elif frame_deadline == math.inf or buffer.frames_delivered != frames:
                    frame_deadline = trio.current_time() + frame_timeout  # a new frame began
                frames = buffer.frames_delivered

    def _read_timed_out(self, frame_deadline: float) -> None:
        handler = self.handler
        if trio.current_time() >= frame_deadline:
            logger.info(
                "closing connection to %s: a frame took longer than %s seconds (frame_timeout)",
                self.peer,
                handler.frame_timeout,
            )
            self.close(trio.TooSlowError(f"a frame took longer than {handler.frame_timeout} s"))
        else:
            logger.info(
                "closing connection to %s: no input for %s seconds (idle_timeout)",
                self.peer,
                handler.idle_timeout,
            )
            self.close(trio.TooSlowError(f"no input for {handler.idle_timeout} seconds"))

    def _hand_over(self) -> None:
        """Give up the right to write: to the send loop if anything is queued."""
        if self.out.items:
            self.wake_sender()
        else:
            self.out.writing = False

    async def _call_hook(self, hook: Callable[[], Awaitable[None] | None]) -> None:
        """Call a sync-or-async hook from the receive loop, writing its pushes directly."""
        mine = self.out.claim()
        try:
            result = hook()
        except BaseException:
            if mine:
                self._hand_over()
            raise
        if mine:
            if self.out.items:
                await self._write_own()
            else:
                self.out.writing = False
        if result is not None and inspect.isawaitable(result):
            await self._await_hook(result)

    async def _await_hook(self, result: Awaitable[None]) -> None:
        """Await an async hook's coroutine; a close_when_done() from another task meanwhile
        takes effect when it returns, after its pushes."""
        self.in_hook = True
        try:
            await result
        finally:
            self.in_hook = False
            if self.phase is Phase.CLOSE_AFTER_HOOK:
                self._begin_closing()

    # ------------------------------------------------------------------ TLS

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_side: bool, server_hostname: str | None
    ) -> None:
        if trio.lowlevel.current_task() is not self.receive_task:
            raise trio.BusyResourceError(
                "start_tls() must be awaited from a hook (e.g. an async found_terminator), "
                "where the receive loop is not reading"
            )
        self.check_open("start_tls")
        switch = TLSSwitch()
        self.enqueue(switch)  # what is pushed after this goes out through TLS
        try:
            await switch.reached.wait()
            self.buffer.clear()
            assert self.stream is not None
            tls = trio.SSLStream(
                self.stream, ssl_context, server_side=server_side, server_hostname=server_hostname
            )
            self.stream = tls
            await tls.do_handshake()
        finally:
            switch.done.set()


def _reset_on_close(stream: trio.abc.Stream | None) -> None:
    """Make closing *stream*'s socket send a reset (SO_LINGER 0). For a peer that stopped
    reading: a plain close would leave the kernel retrying the unsent output for minutes, an
    orphaned socket holding its buffers."""
    while stream is not None and not isinstance(stream, trio.SocketStream):
        stream = getattr(stream, "transport_stream", None)
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _close_stream(stream: trio.abc.Stream | None, *, graceful: bool) -> None:
    if stream is None:
        return
    if graceful:
        with trio.move_on_after(_GRACEFUL_CLOSE_TIMEOUT):
            try:
                if isinstance(stream, trio.SocketStream):
                    # A lingering close: our EOF first, then what the peer still sends (a
                    # pipelined request, say) is read and dropped until its EOF. Closing a TCP
                    # socket with unread input sends a reset, and a reset makes the peer's
                    # kernel discard the replies it has not read yet. (Other streams, memory
                    # streams say, lose nothing by closing with input unread.)
                    await stream.send_eof()
                    budget = _LINGER_BYTES
                    while budget > 0:
                        with trio.move_on_after(_LINGER_QUIET) as quiet:
                            data = await stream.receive_some(_LINGER_READ)
                        if quiet.cancelled_caught or not data:
                            break  # quiet, or the peer's EOF: nothing unread is left
                        budget -= len(data)
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the peer went away first: nothing left to say politely
            else:
                return
    # Closes at once, even inside a cancelled scope.
    await trio.aclose_forcefully(stream)

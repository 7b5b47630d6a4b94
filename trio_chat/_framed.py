"""``FramedStream``: pull-style framing over any trio stream, driven by the sans-IO buffer.

``AsyncChat`` pushes frames into callbacks; ``FramedStream`` lets a task ``await`` the next one::

    line = await stream.receive_until(b"\\r\\n")
    body = await stream.receive_exactly(length)

Both are thin drivers over the same :class:`~trio_chat.TerminatorBuffer`, so framing rules,
limits and the linear-time guarantee are identical. This module imports the core and trio only
(never the serving layer or the CLI).

Cancellation never loses bytes: the pieces of a frame already taken from the buffer are kept and
the next call with the same request continues where the cancelled one stopped; any other call
first puts them back in front of the unread bytes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Final, NoReturn, SupportsIndex, TypeAlias, TypeVar, cast, overload

import trio

from ._buffer import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    Terminator,
    TerminatorBuffer,
)
from ._exceptions import FrameTooLongError, IncompleteFrameError

_T = TypeVar("_T")

__all__ = ["DEFAULT_RECEIVE_SIZE", "Delimiter", "FramedStream", "HalfCloseableFramedStream"]

#: What :meth:`FramedStream.receive_until` accepts: bytes, a tuple of bytes (any of them), or a
#: compiled bytes regular expression; see :class:`~trio_chat.TerminatorBuffer` for the rules.
# Not a string: user code annotated with it must work with typing.get_type_hints().
Delimiter: TypeAlias = bytes | tuple[bytes, ...] | re.Pattern[bytes]

#: The most bytes one read of the wrapped stream asks for: 64 KiB, trio's own default for
#: ``SocketStream.receive_some`` and asynchat's ``ac_in_buffer_size``. With ``max_bytes`` it
#: bounds what a ``FramedStream`` holds: about ``max_bytes + DEFAULT_RECEIVE_SIZE``.
DEFAULT_RECEIVE_SIZE: Final = 65536

# Calls served from the buffer between two schedule points. Every call is a cancel point, and
# every read of the wrapped stream a full checkpoint (trio's streams checkpoint per read); a
# schedule point per frame as well would cost a scheduler pass each, most of the time per short
# frame (the performance page has the figures). None until the buffer is empty would let one
# 64 KiB read of 2-byte frames keep every other task waiting; one per 64 calls bounds that wait
# to 64 loop bodies (AsyncChat's receive loop makes the same trade-off).
_FRAMES_PER_CHECKPOINT: Final = 64


class _ConflictDetector:
    """Raise ``trio.BusyResourceError`` when two tasks use the same side at once.

    trio's own streams use the same small guard (``trio._util.ConflictDetector``, private).
    """

    __slots__ = ("_held", "_message")

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._held = False


def _check_size(value: SupportsIndex, name: str) -> int:
    size = operator.index(value)  # raises TypeError for floats
    if size < 1:
        raise ValueError(f"{name} must be >= 1, not {size}")
    return size


def _check_limit(value: SupportsIndex) -> int:
    limit = operator.index(value)  # raises TypeError for floats
    if limit < 0:
        raise ValueError(f"max_bytes must be >= 0, not {limit}")
    return limit


def _check_delimiter(delimiter: object, method: str = "receive_until") -> None:
    if delimiter is None or isinstance(delimiter, int):
        instead = (
            "receive_exactly(n) to read n bytes" if delimiter is not None else "receive_some()"
        )
        raise TypeError(
            f"{method}() takes bytes, a tuple of bytes or a compiled bytes regex, not "
            f"{type(delimiter).__name__!r}; use {instead}"
        )
    if delimiter == b"":
        raise ValueError(f"{method}() needs a non-empty delimiter, not b''")


class FramedStream(trio.abc.Stream):
    r"""Wraps a :class:`trio.abc.Stream` to receive whole frames: up to a delimiter, or a count.

    It is a stream itself: :meth:`receive_some` returns the bytes already buffered first, and
    :meth:`send_all`, :meth:`wait_send_all_might_not_block` and :meth:`aclose` pass through.
    ``FramedStream(stream)`` returns a :class:`HalfCloseableFramedStream` (with ``send_eof()``)
    when *stream* is a :class:`trio.abc.HalfCloseableStream`.

    For example::

        async def handle(raw: trio.SocketStream) -> None:
            stream = trio_chat.FramedStream(raw, max_bytes=1024)
            async for line in stream.frames((b"\r\n", b"\n")):
                await stream.send_all(line.upper() + b"\r\n")

    The end of the input raises :class:`trio.EndOfChannel` from the receive methods when it
    falls between frames (and ends :meth:`frames`), and :class:`~trio_chat.IncompleteFrameError`
    in the middle of one (its ``.partial`` holds the bytes that did arrive; they are consumed).
    More than *max_bytes* without the delimiter raise :class:`~trio_chat.FrameTooLongError`,
    and every byte received stays readable afterwards (:meth:`receive_some` returns it).

    Memory: a ``FramedStream`` holds at most about ``max_bytes + receive_size`` bytes (twice
    *max_bytes* for a regex delimiter, whose match may be as long as a frame).

    Args:
        stream: the stream to wrap; the ``FramedStream`` owns it (:meth:`aclose` closes it).
        max_bytes: the most bytes of one frame for :meth:`receive_until`, not counting the
            delimiter (None: no limit, which lets a peer that never sends the delimiter make
            the buffer grow without bound).
        receive_size: the most bytes one read of *stream* asks for.

    Attributes:
        frame_timeout: seconds within which a frame must be complete once its first bytes
            arrived (None, the default: no limit), however steadily they trickle in: a defence
            against peers that hold a connection by sending a byte now and then. When it
            passes, the receive call raises :class:`trio.TooSlowError`; the bytes stay with
            the stream. Settable on the class or on one stream.
    """

    frame_timeout: float | None = None

    @overload
    def __new__(
        cls,
        stream: trio.abc.HalfCloseableStream,
        *,
        max_bytes: int | None = ...,
        receive_size: int = ...,
    ) -> HalfCloseableFramedStream: ...

    @overload
    def __new__(
        cls, stream: trio.abc.Stream, *, max_bytes: int | None = ..., receive_size: int = ...
    ) -> FramedStream: ...

    def __new__(
        cls,
        stream: trio.abc.Stream,
        *,
        max_bytes: int | None = DEFAULT_MAX_FRAME_SIZE,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
    ) -> FramedStream:
        # One call for users, an honest isinstance() for trio: only a stream that can send EOF
        # is wrapped in the class that offers send_eof().
        if cls is FramedStream and isinstance(stream, trio.abc.HalfCloseableStream):
            cls = HalfCloseableFramedStream
        return super().__new__(cls)

    # The same overloads for __init__: mypy ignores __new__'s when __init__ is defined, and
    # would type FramedStream(socket_stream) as a FramedStream without send_eof().
    @overload
    def __init__(  # type: ignore[misc]  # self is the subclass __new__ picked, on purpose
        self: HalfCloseableFramedStream,
        stream: trio.abc.HalfCloseableStream,
        *,
        max_bytes: int | None = ...,
        receive_size: int = ...,
    ) -> None: ...

    @overload
    def __init__(
        self, stream: trio.abc.Stream, *, max_bytes: int | None = ..., receive_size: int = ...
    ) -> None: ...

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_bytes: int | None = DEFAULT_MAX_FRAME_SIZE,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
    ) -> None:
        if not isinstance(stream, trio.abc.Stream):
            raise TypeError(f"FramedStream wraps a trio.abc.Stream, not {type(stream).__name__!r}")
        self._stream = stream
        self._buffer = TerminatorBuffer(None, max_frame_size=max_bytes)
        self._max_bytes = self._buffer.max_frame_size
        self._receive_size = _check_size(receive_size, "receive_size")
        self._pieces: list[bytes] = []  # the current frame's data taken from the buffer so far
        self._key: tuple[object, ...] | None = None  # the request the buffer is set up for
        self._wanted: object = None  # the terminator of that request, for IncompleteFrameError
        self._last_delimiter: bytes | None = None
        self._unscheduled = 0  # calls served from the buffer since the last schedule point
        # With frame_timeout: when the bytes of the frame under way began to arrive (the time
        # of the read that brought them), None between frames.
        self._frame_began: float | None = None
        self._closed = False
        self._receive_guard = _ConflictDetector(
            "another task is already receiving from this FramedStream"
        )
        # trio's contract for every stream, checked here whatever the wrapped stream does.
        self._send_guard = _ConflictDetector(
            "another task is already sending on this FramedStream (send_all, send_eof and "
            "wait_send_all_might_not_block are one side)"
        )

    # ------------------------------------------------------------------ properties

    @property
    def transport_stream(self) -> trio.abc.Stream:
        """The wrapped stream (named as trio names it on :class:`trio.SSLStream`)."""
        return self._stream

    @property
    def max_bytes(self) -> int | None:
        """The default frame limit of :meth:`receive_until` (None: no limit); settable."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int | None) -> None:
        self._buffer.max_frame_size = value  # validates
        self._max_bytes = value
        self._key = None

    @property
    def buffered(self) -> int:
        """Bytes received from the wrapped stream and not returned yet."""
        return sum(map(len, self._pieces)) + self._buffer.buffered

    @property
    def last_delimiter(self) -> bytes | None:
        """The bytes that ended the last frame from :meth:`receive_until`: which element of a
        tuple matched, or what a regex matched (None before the first frame)."""
        return self._last_delimiter

    # --------------------------------------------------------------------- framing

    async def receive_until(self, delimiter: Delimiter, *, max_bytes: int | None = None) -> bytes:
        r"""Receive the next frame: the bytes up to *delimiter*, which is consumed but not returned.

        Args:
            delimiter: bytes; a tuple of bytes, such as ``(b"\r\n", b"\n")`` (the match that
                starts first ends the frame, the longest of those that start there); or a
                compiled bytes regex, such as ``re.compile(rb"\r?\n")``.
                :attr:`last_delimiter` tells what matched.
            max_bytes: the most bytes of this frame (default: the stream's :attr:`max_bytes`).

        Raises:
            trio.EndOfChannel: the input ended before the frame started.
            IncompleteFrameError: the input ended in the middle of the frame.
            FrameTooLongError: more than *max_bytes* arrived without the delimiter; all of them
                stay readable.
            TypeError: *delimiter* is not bytes, a tuple of bytes or a bytes regex (for a
                count use :meth:`receive_exactly`).
            ValueError: *delimiter* is ``b""`` or a regex that cannot be streamed (see
                :class:`~trio_chat.TerminatorBuffer`).
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: this stream was closed.
        """
        with self._receive_guard:
            limit = self._max_bytes if max_bytes is None else _check_limit(max_bytes)
            key = ("until", delimiter, limit)
            if key != self._key:
                _check_delimiter(delimiter)
                self._begin(key, delimiter, limit)
            # _receive() inlined for a frame already buffered: one coroutine less per frame.
            await trio.lowlevel.checkpoint_if_cancelled()
            frame = self._take_buffered(self._next_frame)
            if frame is None:
                return await self._receive(self._next_frame)
            return frame

    async def receive_frames(
        self,
        delimiter: Delimiter,
        *,
        max_bytes: int | None = None,
        max_frames: int | None = None,
    ) -> list[bytes]:
        r"""Receive every complete frame already buffered (at least one), without *delimiter*.

        What :meth:`receive_until` returns in as many calls, in one call and with one checkpoint:
        the fastest way to read many small frames. If no frame is complete yet, it reads from
        the wrapped stream until one is, and returns every frame that has completed::

            try:
                while True:
                    for line in await stream.receive_frames(b"\n"):
                        handle(line)
            except trio.EndOfChannel:
                pass  # the input ended between frames

        The frames are the same however the input was split into reads; how many one call
        returns is not (it depends on what has arrived).

        Args:
            delimiter: as for :meth:`receive_until`: bytes, a tuple of bytes or a compiled
                bytes regex. A ``bytes`` delimiter takes the fast path (one ``bytes.split``).
            max_bytes: the most bytes of each frame (default: the stream's :attr:`max_bytes`).
            max_frames: the most frames to return (None: no limit); the rest stay buffered.

        Returns:
            The frames in the order they arrived; never empty. :attr:`last_delimiter` tells
            what ended the last one.

        Raises:
            trio.EndOfChannel: the input ended between frames, and no frame was left.
            IncompleteFrameError: the input ended in the middle of a frame, and no complete
                frame was left before it (those are returned first; the next call raises).
            FrameTooLongError: more than *max_bytes* arrived without the delimiter, and no
                complete frame was left before them (those are returned first; the next call
                raises); all the bytes of the long frame stay readable.
            TypeError: *delimiter* is not bytes, a tuple of bytes or a bytes regex.
            ValueError: *delimiter* is ``b""`` or a regex that cannot be streamed, or
                *max_frames* is less than 1.
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: this stream was closed.

        Cancelling it loses nothing: a cancelled call has taken no frame, and the bytes of an
        unfinished frame stay with the stream for the next call.
        """
        with self._receive_guard:
            limit = self._max_bytes if max_bytes is None else _check_limit(max_bytes)
            if max_frames is not None:
                max_frames = _check_size(max_frames, "max_frames")
            key = ("until", delimiter, limit)
            if key != self._key:
                _check_delimiter(delimiter, "receive_frames")
                self._begin(key, delimiter, limit)
            return await self._receive(lambda: self._next_frames(max_frames) or None)

    async def receive_exactly(self, n: int) -> bytes:
        """Receive exactly *n* bytes (a frame of a known length; ``0`` returns ``b""``).

        *n* is not checked against :attr:`max_bytes`: when it comes from the peer (a length
        header), check it before calling.

        Raises:
            trio.EndOfChannel: the input ended before any of the bytes arrived.
            IncompleteFrameError: the input ended after some of them.
            ValueError: *n* is negative.
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: this stream was closed.
        """
        with self._receive_guard:
            n = operator.index(n)
            if n < 0:
                raise ValueError(f"receive_exactly() needs n >= 0, not {n}")
            if n == 0:
                await trio.lowlevel.checkpoint()
                self._check_open()
                return b""
            key = ("exactly", n)
            if key != self._key:
                self._begin(key, n, None)
            await trio.lowlevel.checkpoint_if_cancelled()  # as in receive_until()
            frame = self._take_buffered(self._next_frame)
            if frame is None:
                frame = await self._receive(self._next_frame)
            self._key = None  # a satisfied count leaves the buffer with no terminator
            return frame

    def frames(self, delimiter: Delimiter, *, max_bytes: int | None = None) -> AsyncIterator[bytes]:
        """Iterate over frames ending with *delimiter* (as :meth:`receive_until`) until EOF.

        The iteration ends when the input ends between frames; an incomplete last frame raises
        :class:`~trio_chat.IncompleteFrameError`.

        Each step is a :meth:`receive_until`, so it checkpoints as that does: every step can be
        cancelled, and it lets other tasks run whenever it reads and after 64 frames in a row
        served from the buffer (:class:`~trio_chat.AsyncChat` makes the same trade-off).
        Leaving the loop early (``break``) loses nothing: the frames not handed over yet stay
        in the stream's buffer for the next receive call.
        """
        return _Frames(self, delimiter, max_bytes)

    # --------------------------------------------------------------- pass-through

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return buffered bytes if there are any (at most *max_bytes*), else receive from the
        wrapped stream; ``b""`` at the end of the input.

        Raises:
            ValueError: *max_bytes* is less than 1.
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: this stream was closed.
        """
        with self._receive_guard:
            if max_bytes is not None:
                max_bytes = _check_size(max_bytes, "max_bytes")
            if self._pieces:
                self._rewind()
            if self._closed:
                await trio.lowlevel.checkpoint()
                self._check_open()
            buf = self._buffer
            if buf.buffered or buf.eof:
                await trio.lowlevel.checkpoint_if_cancelled()
                data = buf.take(max_bytes)  # b"" at EOF
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            received = await self._stream.receive_some(max_bytes)
            if not received:
                self._buffer.feed_eof()  # so receive_until() reports the end too
            return bytes(received)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* on the wrapped stream."""
        with self._send_guard:
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """As the wrapped stream's."""
        with self._send_guard:
            await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Drop the buffered bytes and close the wrapped stream."""
        self._closed = True
        self._pieces.clear()
        self._buffer.clear()
        await self._stream.aclose()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this FramedStream was closed")

    def _begin(self, key: tuple[object, ...], terminator: Terminator, limit: int | None) -> None:
        """Set the buffer up for a new kind of request."""
        if self._pieces:
            self._rewind()
        self._buffer.set_terminator(terminator)
        if terminator.__class__ is not int:  # a count ignores the limit: leave it as it is
            self._buffer.max_frame_size = limit
        self._key = key
        self._wanted = terminator

    def _rewind(self) -> None:
        """Put the pieces of an abandoned frame back in front of the unread bytes."""
        self._buffer.unread(b"".join(self._pieces))
        self._pieces.clear()
        self._key = None

    def _next_frame(self) -> bytes | None:
        """Take the next complete frame from the buffer, or None if more input is needed."""
        buffer = self._buffer
        try:
            frame = buffer.take_frame(self._pieces)
        except FrameTooLongError:
            self._rewind()  # every byte stays readable
            raise
        if frame.__class__ is bytes:
            last = buffer.last_terminator
            if last.__class__ is bytes:
                self._last_delimiter = last
            if self._frame_began is not None and not self.buffered:
                self._frame_began = None  # between frames: the frame_timeout clock stops
            return frame
        if frame is END_OF_INPUT:
            self._end_of_input()
        return None

    def _end_of_input(self) -> NoReturn:
        self._key = None
        pieces = self._pieces
        if pieces:
            partial = b"".join(pieces)
            pieces.clear()
            raise IncompleteFrameError(partial, self._wanted)
        raise trio.EndOfChannel("the input ended (between frames)")

    def _next_frames(self, max_frames: int | None) -> list[bytes]:
        """Take the complete frames from the buffer: none means more input is needed."""
        pieces = self._pieces
        frames: list[bytes] = []
        try:
            last = self._buffer.take_frames(frames, pieces, max_frames)
        except FrameTooLongError:
            self._rewind()  # every byte stays readable
            raise
        if frames:
            if last.__class__ is bytes:
                self._last_delimiter = last
            if self._frame_began is not None and not self.buffered:
                self._frame_began = None  # between frames: the frame_timeout clock stops
        elif last is END_OF_INPUT:
            self._end_of_input()
        return frames

    async def _receive(self, take: Callable[[], _T | None]) -> _T:
        """Read until ``take()`` returns something (a frame, or a list of frames).

        Checkpoints as trio's streams do: every call is a cancel point, every read of the wrapped
        stream a full checkpoint, and a call served from the buffer a schedule point only once
        per ``_FRAMES_PER_CHECKPOINT`` such calls. A cancelled call has taken nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        taken = take()
        if taken is None:
            return await self._read_until_taken(take)
        self._unscheduled += 1
        if self._unscheduled >= _FRAMES_PER_CHECKPOINT:
            self._unscheduled = 0
            # Cannot be cancelled: the frame is already taken from the buffer.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return taken

    def _take_buffered(self, take: Callable[[], _T | None]) -> _T | None:
        """``take()`` for a call that has passed its cancel point, when that is all it needs:
        None when it must read, or when a schedule point is due (``_receive`` does both)."""
        if self._closed or self._unscheduled >= _FRAMES_PER_CHECKPOINT - 1:
            return None
        taken = take()
        if taken is not None:
            self._unscheduled += 1
        return taken

    async def _read_until_taken(self, take: Callable[[], _T | None]) -> _T:
        """Read from the wrapped stream until ``take()`` returns something."""
        self._unscheduled = 0
        timeout = self.frame_timeout
        while True:
            # The wrapped stream's receive_some checkpoints, even on errors.
            if timeout is None:
                data = await self._stream.receive_some(self._receive_size)
            else:
                data = await self._receive_in_time()
            if data:
                self._buffer.feed(data)
            else:
                self._buffer.feed_eof()
            taken = take()
            if taken is not None:
                break
        if timeout is not None:
            # Bytes left over belong to the next frame: it began with the read just made.
            self._frame_began = trio.current_time() if self.buffered else None
        return taken

    async def _receive_in_time(self) -> bytes | bytearray:
        """One read of the wrapped stream, within the frame's deadline (``frame_timeout``)."""
        timeout = self.frame_timeout
        assert timeout is not None
        now = trio.current_time()
        began = self._frame_began
        if began is None:
            if not self.buffered:  # between frames: the clock starts with the next bytes
                data = await self._stream.receive_some(self._receive_size)
                self._frame_began = trio.current_time()
                return data
            began = self._frame_began = now
        with trio.fail_at(began + timeout):
            return await self._stream.receive_some(self._receive_size)


class HalfCloseableFramedStream(FramedStream, trio.abc.HalfCloseableStream):
    """A :class:`FramedStream` over a :class:`trio.abc.HalfCloseableStream`: adds
    :meth:`send_eof`. ``FramedStream(stream)`` picks it for you."""

    async def send_eof(self) -> None:
        """Close the sending side of the wrapped stream; receiving goes on."""
        with self._send_guard:
            await cast(trio.abc.HalfCloseableStream, self._stream).send_eof()


class _Frames:
    """The async iterator of :meth:`FramedStream.frames` (a class, not an async generator, so
    there is nothing to finalise when a loop is left early). Each step is one
    :meth:`FramedStream.receive_until`: a loop left early leaves the rest with the stream."""

    __slots__ = ("_delimiter", "_max_bytes", "_stream")

    def __init__(self, stream: FramedStream, delimiter: Delimiter, max_bytes: int | None) -> None:
        self._stream = stream
        self._delimiter = delimiter
        self._max_bytes = max_bytes

    def __aiter__(self) -> _Frames:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._stream.receive_until(self._delimiter, max_bytes=self._max_bytes)
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

"""The sans-IO terminator buffer: bytes in, "collected data" and "terminator found" out.

This module never imports trio (or does any I/O, or reads a clock): ``AsyncChat`` and
``FramedStream`` are thin drivers over :class:`TerminatorBuffer`.

One search, three drivers
-------------------------
Frames are found in one place: the reader of the current terminator kind (``_readers.py``),
whose ``find(data, pos, eof, limit)`` says how much of the frame can be handed over and whether
the terminator was found. The buffer's three ways of handing frames out all call it and differ
only in where the results go: :meth:`~TerminatorBuffer.next_event` returns one event,
:meth:`~TerminatorBuffer.deliver` calls asynchat-style hooks, :meth:`~TerminatorBuffer.next_frames`
collects whole frames. None of them caches the buffer's fields across a hook call, so whatever
a hook does to the buffer (a new terminator, ``clear()``, ``feed()``) takes effect at once.

Linear time, however the input is chunked
------------------------------------------
The stdlib ``asynchat.handle_read`` re-searches and re-copies the unprocessed remainder once per
frame (``ac_in_buffer = ac_in_buffer[index + len(term):]``), which is quadratic in the number of
frames per read. Here:

* consuming input moves an offset (``_pos``) into an immutable ``bytes`` object; a frame is copied
  out exactly once, when it is handed over;
* data that cannot be part of a terminator is handed over as soon as it is seen, so after a failed
  search the unconsumed remainder is only the held-back terminator prefix: the next search
  resumes there (see ``_readers.py`` for each kind);
* ``feed`` stores without copying when everything before has been consumed (the usual case for a
  driver that drains events after each read); otherwise chunks wait in a list that is joined once.

Switching terminators is O(1): readers are kept per terminator value and reused (a count reader
is one object whose count is reset), so a protocol that switches on every frame (RESP, HTTP
bodies) builds nothing per switch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from ._events import (
    END_OF_INPUT,
    NEED_DATA,
    BufferEvent,
    Event,
    Signal,
    Terminator,
    TerminatorFound,
)
from ._exceptions import FrameTooLongError
from ._readers import CountReader, NoneReader, Reader, make_reader

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "END_OF_INPUT",
    "NEED_DATA",
    "BufferEvent",
    "Event",
    "Signal",
    "Terminator",
    "TerminatorBuffer",
    "TerminatorFound",
    "find_prefix_at_end",
]

#: Default limit on the bytes of one frame (``bytes`` terminators only). 64 KiB is asyncio's
#: ``StreamReader`` limit and asynchat's ``ac_in_buffer_size``; Twisted's ``LineReceiver`` and h11
#: use 16 KiB. Long enough for any line or header block, small enough that a peer that never sends
#: the terminator cannot make a handler that accumulates frames grow without bound.
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024

# Searching readers kept per buffer for reuse. Protocols use a handful of terminators; a handler
# that makes up new ones per frame (an unusual regex per request, say) must not grow the cache
# without bound, so past this many it starts over.
_READER_CACHE_SIZE: Final = 16
_CACHED_KINDS: Final = frozenset({bytes, tuple, re.Pattern})


def find_prefix_at_end(haystack: bytes, needle: bytes) -> int:
    """Return the length of the longest proper prefix of *needle* that *haystack* ends with.

    As ``asynchat.find_prefix_at_end``: ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``.
    """
    n = len(needle) - 1
    while n > 0 and not haystack.endswith(needle[:n]):
        n -= 1
    return max(n, 0)


def _check_max_frame_size(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_frame_size must be an int or None, not {type(value).__name__!r}")
    if value < 0:
        raise ValueError(f"max_frame_size must be >= 0 (or None for no limit), not {value}")
    return value


class TerminatorBuffer:
    r"""Splits a byte stream into frames by a terminator that may change between events.

    Feed bytes with :meth:`feed` (it only stores them), then call :meth:`next_event` until it
    returns :data:`NEED_DATA`. Each event is one of:

    * ``bytes`` (never empty): collected data, part of the current frame;
    * :class:`TerminatorFound`: the current frame is complete;
    * :data:`NEED_DATA`: feed more bytes;
    * :data:`END_OF_INPUT`: :meth:`feed_eof` was called and everything was handed over.

    A change of terminator applies at once to bytes already buffered. With a ``bytes`` terminator
    only a possible terminator prefix at the end of the data is held back, and it is handed over
    at EOF. More than ``max_frame_size`` frame bytes without the terminator raise
    :class:`FrameTooLongError` (after the first ``max_frame_size`` bytes were handed over),
    independently of how the input was chunked.

    Searching terminators (bytes, tuple, regex) never report a match that more input could
    change, so the events are the same however the input is chunked:

    * A **tuple** of bytes, such as ``(b"\r\n", b"\n")``: the match that starts first wins, the
      longest among those that start at the same place; :attr:`TerminatorFound.terminator`
      tells which one matched. Held back: the longest suffix that is a proper prefix of any of
      them. Linear time, like a single ``bytes`` terminator (each one is searched once per read).
    * A compiled bytes **regular expression**, such as ``re.compile(rb"\r?\n")``: the frame ends
      at the match ``pattern.search`` finds in the whole input (the leftmost, with the regex's own
      preferences); :attr:`TerminatorFound.terminator` is the matched bytes. A match is reported
      once no attempt starting at or before it could change with more bytes: ``b"\n"`` ends a
      ``rb"\r?\n"`` frame at once, but ``rb"\n\n+"`` waits for the byte after the newlines (or
      EOF), since a greedy ``+`` at the end of the buffer could still grow. The pattern sees at
      most ``2 * max_frame_size`` bytes from the frame start (the frame and its terminator) and
      is matched as if the input ended there. ``^``, ``\A``, ``\b``, ``\B``, lookbehinds and
      backreferences are refused (they would look at bytes already handed over), as are patterns
      that can match the empty string.

      Cost: one ``pattern.search`` from the current position per event, plus a check of the
      positions where a match could still start. For a pattern whose matches are at most *R*
      bytes long (``rb"\r?\n"``: *R* = 2) only the last *R* buffered bytes are checked and held
      back, so the total work is linear in the input. For unbounded patterns (``+``, ``*``,
      ``{n,}``) the held-back bytes can reach the window and are searched again after each
      read: up to ``O(window)`` per read, as with any regex search over the window. Keep
      ``max_frame_size`` as small as the protocol allows, or bound the repetition
      (``rb"\n{2,64}"``).

    Args:
        terminator: the initial terminator (see :meth:`set_terminator`).
        max_frame_size: the most bytes a frame may have with a searching (bytes, tuple or regex)
            terminator, or None.
    """

    # Invariants: 0 <= _pos <= len(_data); _pending holds bytes fed after _data, in order, and is
    # non-empty only while _pos < len(_data) (feed() replaces a used-up _data instead; every
    # search joins _pending first); _found is the
    # terminator of a frame whose data was handed over but whose end was not reported yet (None:
    # none due); _reader is the reader of the current terminator, _count the one CountReader,
    # _readers the searching readers kept for reuse.
    __slots__ = (
        "_count",
        "_data",
        "_eof",
        "_epoch",
        "_found",
        "_interrupted",
        "_last",
        "_max_frame_size",
        "_pending",
        "_pos",
        "_reader",
        "_readers",
        "frames_delivered",
    )

    def __init__(
        self, terminator: Terminator = None, *, max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self._data = b""
        self._pos = 0
        self._pending: list[bytes] = []
        self._eof = False
        self._found: bytes | int | None = None
        self._max_frame_size = _check_max_frame_size(max_frame_size)
        self._readers: list[Reader] | None = None  # created by the first search
        self._count: CountReader | None = None  # created by the first count
        self._reader: Reader = NoneReader(None)
        self._interrupted = False
        # Bumped by everything but a new terminator that changes what the next search would see
        # (the input, the limit, EOF, an interrupt): deliver() reloads its view of the buffer
        # after a hook only when it changed.
        self._epoch = 0
        self._last: bytes | int | None = None
        #: How many terminators :meth:`deliver` has handed to its ``found`` callback.
        self.frames_delivered: int = 0
        self.set_terminator(terminator)

    # ------------------------------------------------------------------ settings

    @property
    def max_frame_size(self) -> int | None:
        """The most bytes one frame may have with a searching terminator (None: no limit)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int | None) -> None:
        if value is not self._max_frame_size:
            self._max_frame_size = _check_max_frame_size(value)
            self._epoch += 1

    def set_terminator(self, terminator: Terminator) -> None:
        """Set the terminator: bytes, a tuple of bytes or a compiled bytes regex to search for,
        a count of bytes, or None for everything.

        ``b""`` and ``0`` act as None. It applies at once, to bytes already buffered too.

        Raises:
            TypeError: *terminator* is a ``str`` (pass bytes), a ``str`` regex, a list (pass a
                tuple), a tuple holding something other than bytes, or another type.
            ValueError: *terminator* is a negative int, an empty tuple, a tuple holding ``b""``,
                or a regex that can match the empty string or looks behind its start.
        """
        kind = terminator.__class__
        if kind is int and terminator > 0:  # type: ignore[operator]
            # The one CountReader, restarted in place (CountReader.start, inlined: protocols
            # that read a counted payload per request call this for every one).
            count = self._count
            if count is None:
                count = self._count = CountReader()
            count.count = count.remaining = terminator  # type: ignore[assignment]
            reader: Reader = count
        elif kind in _CACHED_KINDS:
            # A list, not a dict: it holds a handful of readers (one for most protocols), is
            # smaller, and takes unhashable tuples too (a tuple the reader normalised, holding
            # a bytearray, is simply not found and gets a new reader).
            readers = self._readers
            if readers is None:
                readers = self._readers = []
            for reader in readers:
                if reader.terminator == terminator:
                    reader.restart()
                    break
            else:
                reader = make_reader(terminator)
                if len(readers) >= _READER_CACHE_SIZE:
                    readers.clear()
                readers.append(reader)
        else:
            reader = make_reader(terminator)  # None, 0, bytearray, memoryview, or an error
        # No _epoch change: deliver() asks the current reader at every step (protocols switch
        # on almost every frame).
        self._reader = reader

    def get_terminator(self) -> Terminator:
        """The current terminator; a count terminator reports the bytes still wanted."""
        return self._reader.terminator

    @property
    def terminator(self) -> Terminator:
        """The current terminator (as :meth:`get_terminator`)."""
        return self._reader.terminator

    # --------------------------------------------------------------------- state

    @property
    def eof(self) -> bool:
        """Whether :meth:`feed_eof` was called."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet handed over."""
        return len(self._data) - self._pos + sum(map(len, self._pending))

    @property
    def frame_started(self) -> bool:
        """Whether data of an unfinished frame was handed over since the last terminator."""
        return self._reader.frame_len > 0

    @property
    def last_found(self) -> TerminatorFound | None:
        """The last :class:`TerminatorFound` that :meth:`deliver` handed to its hook, or None."""
        last = self._last
        return None if last is None else TerminatorFound(last)

    @property
    def last_terminator(self) -> bytes | int | None:
        """What matched at the last terminator :meth:`deliver`, :meth:`take_frame` or
        :meth:`next_frames` reported (None before one)."""
        return self._last

    # --------------------------------------------------------------------- input

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Store *data* for the next events; never processes anything itself.

        Raises:
            RuntimeError: :meth:`feed_eof` was already called.
            TypeError: *data* is not bytes-like.
        """
        if data.__class__ is not bytes:
            if isinstance(data, str):
                raise TypeError("feed() takes bytes, not 'str' (encode it first)")
            data = bytes(data)
        if self._eof:
            raise RuntimeError("feed() after feed_eof(): the input has already ended")
        if not data:
            return
        self._epoch += 1
        if self._pos == len(self._data):
            self._data = data
            self._pos = 0
        else:
            self._pending.append(data)

    def feed_eof(self) -> None:
        """Mark the end of the input: held-back bytes are handed over, then END_OF_INPUT."""
        self._eof = True
        self._epoch += 1

    def unread(self, data: bytes) -> None:
        """Put *data* back in front of the input not handed over yet, and start the current
        frame over (for a driver that gives back the pieces of a frame it took)."""
        if data:
            self._data = data + self._data[self._pos :]
            self._pos = 0
        self._reader.restart()
        self._epoch += 1

    def take(self, n: int | None = None) -> bytes:
        """Hand over up to *n* (None: all) buffered bytes as they are, bypassing the terminator;
        the current frame starts over."""
        self._compact()
        data = self._data
        pos = self._pos
        end = len(data) if n is None else min(len(data), pos + n)
        self._pos = end
        self._reader.restart()
        self._epoch += 1
        return data[pos:end]

    def clear(self) -> bytes:
        """Drop every byte fed but not yet handed over.

        A terminator already consumed with the data handed over before it is still reported
        (it is not input any more), as asynchat calls ``found_terminator()`` after a
        ``discard_buffers()`` in ``collect_incoming_data()``.

        Returns:
            The dropped bytes, for a driver that wants to hand them to someone else.
        """
        dropped = self._data[self._pos :] + b"".join(self._pending)
        self._epoch += 1
        self._data = b""
        self._pos = 0
        self._pending.clear()
        self._reader.restart()
        return dropped

    def _compact(self) -> None:
        """Join the pending chunks behind the unread rest: once per read, so it stays linear."""
        if self._pending:
            self._data = self._data[self._pos :] + b"".join(self._pending)
            self._pos = 0
            self._pending.clear()

    # ------------------------------------------------------------------ drivers

    def next_event(self) -> Event:
        """Return the next event (see the class docstring).

        Raises:
            FrameTooLongError: a frame exceeded ``max_frame_size``; it is raised again on every
                call until the terminator or the limit is changed or the buffer cleared.
        """
        found = self._found
        if found is None:
            step = self._search()
            if isinstance(step, Signal):
                return step
            data, pos, end, found = step
            if end > pos:
                self._found = found
                return data[pos:end]
        else:
            self._found = None
        return TerminatorFound(found)  # type: ignore[arg-type]  # _search(): found if no data

    def _search(self) -> tuple[bytes, int, int, bytes | int | None] | Signal:
        """One search from the current position, for the one-at-a-time drivers: the data
        object, where the frame data handed over starts and ends in it, and what ended the
        frame (None: not ended yet); or the signal when there is nothing to hand over."""
        if self._pending:
            self._compact()
        data = self._data
        pos = self._pos
        if pos < len(data):
            end, self._pos, found = self._reader.find(data, pos, self._eof, self._max_frame_size)
            if end > pos or found is not None:
                return data, pos, end, found
        return END_OF_INPUT if self._eof else NEED_DATA

    def deliver(
        self,
        collect: Callable[[bytes], object],
        found: Callable[[], object],
        max_frames: int,
    ) -> object:
        """Hand events to callbacks, asynchat style, until there is a reason to stop.

        Each piece of collected data goes to ``collect(data)``, each terminator to ``found()``
        (:attr:`last_terminator` tells which). The callbacks may change the buffer (terminator,
        :meth:`clear`, :meth:`feed`): it applies from the next event on. It returns:

        * :data:`NEED_DATA` or :data:`END_OF_INPUT` when the input is used up;
        * a callback's result when it is not None (a coroutine, say): the caller awaits it,
          then calls ``deliver`` again;
        * None after *max_frames* terminators, or once a callback called :meth:`interrupt`, so
          the caller can yield to others (or stop) before going on.

        Raises:
            FrameTooLongError: as :meth:`next_event`.
        """
        frames = 0
        try:
            while True:
                if self._interrupted:
                    self._interrupted = False
                    return None
                term = self._found
                if term is not None:  # its data was handed over before a hook stopped us
                    self._found = None
                    self._last = term
                    frames += 1
                    result = found()
                    if result is not None:
                        return result
                    if frames >= max_frames:
                        return None
                    continue
                if self._pending:
                    self._compact()
                # The buffer as the hooks leave it: reloaded whenever one changed it (_epoch).
                epoch = self._epoch
                data = self._data
                size = len(data)
                start = self._pos
                eof = self._eof
                limit = self._max_frame_size
                while start < size:
                    end, self._pos, term = self._reader.find(data, start, eof, limit)
                    if end > start:
                        result = collect(data[start:end])
                        if result is not None or self._epoch != epoch:
                            self._found = term  # found() is still due, at the next step
                            if result is not None:
                                return result
                            break
                        if term is None:
                            start = end
                            continue
                    elif term is None:  # the rest is held back
                        return END_OF_INPUT if eof else NEED_DATA
                    self._last = term
                    frames += 1
                    result = found()
                    if result is not None:
                        return result
                    if frames >= max_frames:
                        return None
                    if self._epoch != epoch:
                        break
                    start = self._pos
                else:
                    return END_OF_INPUT if eof else NEED_DATA
        finally:
            self.frames_delivered += frames

    def interrupt(self) -> None:
        """Make a running :meth:`deliver` return None after the current callback (or the next
        call return None at once)."""
        self._interrupted = True
        self._epoch += 1

    def next_frames(
        self, pieces: list[bytes], max_frames: int | None = None
    ) -> tuple[list[bytes], TerminatorFound | Signal]:
        """Hand over every complete frame already buffered at once, each joined, without its
        terminator: :meth:`next_event` in a loop, for a pull-style driver.

        Args:
            pieces: the data of the current frame handed over so far (by :meth:`next_event` or
                an earlier call), kept by the caller. It is joined in front of the first
                frame; the data of a frame that is not complete yet is appended to it, so the
                caller can call again after :meth:`feed`, or put the bytes back.
            max_frames: the most frames to return (None: every complete frame).

        Returns:
            The frames (possibly none), and the last frame's :class:`TerminatorFound`; when no
            frame was complete, :data:`NEED_DATA` or :data:`END_OF_INPUT` instead (with data
            left in *pieces*, :data:`END_OF_INPUT` means the input ended inside a frame).

        Raises:
            FrameTooLongError: as :meth:`next_event`, but only when no frame came before the
                too-long one; otherwise the frames are returned and the next call raises.
            ValueError: *max_frames* is less than 1.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or None for no limit), not {max_frames}")
        frames: list[bytes] = []
        last = self.take_frames(frames, pieces, max_frames)
        if last.__class__ is Signal:
            return frames, last
        return frames, TerminatorFound(last)  # type: ignore[arg-type]

    def take_frames(
        self, frames: list[bytes], pieces: list[bytes], max_frames: int | None
    ) -> bytes | int | Signal:
        """:meth:`next_frames` without allocations beyond the frames: appends them to *frames*
        and returns the last one's terminator (bytes or count), or the signal when none was
        complete."""
        while True:
            try:
                frame = self.take_frame(pieces)
            except FrameTooLongError:
                if frames:
                    return self._last  # type: ignore[return-value]  # the frames first
                raise
            if frame.__class__ is not bytes:
                return self._last if frames else frame  # type: ignore[return-value]
            frames.append(frame)
            if len(frames) == max_frames:
                return self._last  # type: ignore[return-value]

    def take_frame(self, pieces: list[bytes]) -> bytes | Signal:
        """The next complete frame, or :data:`NEED_DATA` / :data:`END_OF_INPUT` when none is.

        The pull-style primitive (:meth:`take_frames` and :class:`~trio_chat.FramedStream` are
        built on it). *pieces* holds the data of the current frame handed over so far: it is
        joined in front of the frame, and the data of a frame that is not complete yet is
        appended to it. :attr:`last_terminator` tells what ended the frame.

        Raises:
            FrameTooLongError: as :meth:`next_event`.
        """
        while True:
            term = self._found
            if term is None:
                step = self._search()
                if isinstance(step, Signal):
                    return step
                data, pos, end, term = step
                if term is None:
                    pieces.append(data[pos:end])
                    continue
                if not pieces:  # the whole frame is in this data object
                    self._last = term
                    return data[pos:end]
                if end > pos:
                    pieces.append(data[pos:end])
            else:
                self._found = None
            self._last = term
            frame = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            return frame

    def __repr__(self) -> str:
        return (
            f"<TerminatorBuffer terminator={self.terminator!r} buffered={self.buffered}"
            f"{' eof' if self._eof else ''}>"
        )

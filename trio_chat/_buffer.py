"""The sans-IO terminator buffer: bytes in, "collected data" and "terminator found" out.

This module never imports trio (or does any I/O, or reads a clock): ``AsyncChat`` and
``FramedStream`` are thin drivers over :class:`TerminatorBuffer`.

Linear time, however the input is chunked
------------------------------------------
The stdlib ``asynchat.handle_read`` re-searches and re-copies the unprocessed remainder once per
frame (``ac_in_buffer = ac_in_buffer[index + len(term):]``), which is quadratic in the number of
frames per read. Here:

* consuming input moves an offset (``_pos``) into an immutable ``bytes`` object; a frame is copied
  out exactly once, when it is handed over;
* data that cannot be part of a terminator is handed over as soon as it is seen, so after a failed
  search the unconsumed remainder is only the held-back terminator prefix (at most
  ``len(terminator) - 1`` bytes): the next search resumes at that offset, and no byte is examined
  more than ``len(terminator)`` times;
* ``feed`` stores without copying when everything before has been consumed (the usual case for a
  driver that drains events after each read); otherwise chunks wait in a list that is joined once.

Beyond asynchat, a tuple of bytes terminators (the earliest match wins, the longest among those
starting at the same place) keeps the same guarantees: each terminator's search resumes where
its last one stopped, and only the longest suffix that is a prefix of *any* of them is held back.
A compiled bytes regular expression is searched as described in ``_regex.py``: a match is
reported once no attempt at or before it could change with more input, so the events never
depend on the chunking; its cost depends on the pattern and the window (``2 * max_frame_size``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Final, TypeAlias

import attrs

from ._exceptions import FrameTooLongError
from ._regex import plan_regex

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "END_OF_INPUT",
    "NEED_DATA",
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

#: What ``set_terminator`` accepts: bytes (search for them), a tuple of bytes (search for any of
#: them), a compiled bytes regular expression (search for a match), an int (count that many bytes)
#: or None (hand over everything). ``b""`` and ``0`` act as None.
Terminator: TypeAlias = "bytes | tuple[bytes, ...] | re.Pattern[bytes] | int | None"


class Signal(enum.Enum):
    """The two events that carry no data."""

    #: Every buffered byte has been handed over (or is a held-back terminator prefix): feed more.
    NEED_DATA = "NEED_DATA"
    #: ``feed_eof()`` was called and every buffered byte has been handed over.
    END_OF_INPUT = "END_OF_INPUT"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Signal.NEED_DATA
END_OF_INPUT: Final = Signal.END_OF_INPUT


@attrs.frozen
class TerminatorFound:
    """The terminator was found: the frame whose data was handed over so far is complete.

    Attributes:
        terminator: the bytes that matched (for a tuple, which of them; for a regular expression,
            the matched bytes), or for a count terminator the count that was set.
    """

    terminator: bytes | int


#: What :meth:`TerminatorBuffer.next_event` returns. ``bytes`` (never empty) is collected data.
Event: TypeAlias = "bytes | TerminatorFound | Signal"


def find_prefix_at_end(haystack: bytes, needle: bytes) -> int:
    """Return the length of the longest proper prefix of *needle* that *haystack* ends with.

    As ``asynchat.find_prefix_at_end``: ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``.
    """
    n = len(needle) - 1
    while n > 0 and not haystack.endswith(needle[:n]):
        n -= 1
    return max(n, 0)


def _failure_function(term: bytes) -> list[int]:
    """Knuth-Morris-Pratt: fail[i] is the longest proper border of term[: i + 1]."""
    fail = [0] * len(term)
    k = 0
    for i in range(1, len(term)):
        while k and term[i] != term[k]:
            k = fail[k - 1]
        if term[i] == term[k]:
            k += 1
        fail[i] = k
    return fail


# Up to this length the held-back prefix is found with ``endswith`` over precomputed prefixes
# (fast for the usual 1-4 byte terminators); longer ones use a KMP scan of the last
# ``len(term) - 1`` bytes, which stays O(len(term)) even for terminators like b"aaaa...a".
_SHORT_TERMINATOR = 32


class _BytesReader:
    """Searches for a bytes terminator; holds back a possible terminator prefix."""

    __slots__ = ("_fail", "_found", "_prefixes", "frame_len", "term")

    def __init__(self, term: bytes) -> None:
        self.term = term
        self._found = TerminatorFound(term)
        self.frame_len = 0  # bytes of the current frame handed over so far
        if len(term) <= _SHORT_TERMINATOR:
            self._prefixes = tuple(term[:n] for n in range(len(term) - 1, 0, -1))
            self._fail: list[int] | None = None
        else:
            self._prefixes = ()
            self._fail = _failure_function(term)

    @property
    def terminator(self) -> bytes:
        return self.term

    def _held_back(self, data: bytes, start: int) -> int:
        """Length of the longest terminator prefix that ``data[start:]`` ends with."""
        fail = self._fail
        if fail is None:
            for prefix in self._prefixes:
                if data.endswith(prefix, start):
                    return len(prefix)
            return 0
        term = self.term
        q = 0
        for c in data[max(start, len(data) - len(term) + 1) :]:
            while q and term[q] != c:
                q = fail[q - 1]
            if term[q] == c:
                q += 1
        return q

    def next_event(self, buf: TerminatorBuffer) -> Event:
        data = buf._data
        pos = buf._pos
        term = self.term
        limit = buf._max_frame_size
        if limit is None:
            idx = data.find(term, pos)
        else:
            # Never look further than the limit allows: a hostile peer's megabytes are refused
            # after scanning at most max_frame_size + len(term) bytes.
            idx = data.find(term, pos, pos + limit - self.frame_len + len(term))
        if idx >= 0:
            n = idx - pos
            if limit is not None and self.frame_len + n > limit:
                return self._refuse(buf, limit)
            buf._pos = idx + len(term)
            self.frame_len = 0
            if n:
                buf._found = self._found
                return data[pos:idx]
            return self._found
        end = len(data)
        if not buf._eof:
            end -= self._held_back(data, pos)
        if limit is not None and self.frame_len + end - pos > limit:
            return self._refuse(buf, limit)
        if end == pos:
            return END_OF_INPUT if buf._eof else NEED_DATA
        buf._pos = end
        self.frame_len += end - pos
        return data[pos:end]

    def _refuse(self, buf: TerminatorBuffer, limit: int) -> Event:
        return _refuse(self, buf, limit)


def _refuse(reader: _SearchReader, buf: TerminatorBuffer, limit: int) -> Event:
    """The frame is over the limit: hand over what the limit allows, then raise."""
    # Hand over the frame up to the limit first, so the events before the error are the same
    # however the input was chunked.
    allowed = limit - reader.frame_len
    if allowed <= 0:
        raise FrameTooLongError(limit, reader.terminator)
    pos = buf._pos
    buf._pos = pos + allowed
    reader.frame_len = limit
    return buf._data[pos : pos + allowed]


class _AnyOfReader:
    """Searches for several bytes terminators at once: the earliest match wins, and the longest
    among those starting at the same place.

    Each terminator remembers how far it has been searched in the current data object (``_at``)
    and whether an occurrence starts there (``_hit``), so a terminator that does not occur in a
    read is searched once per read, not once per frame. A match is reported only when no longer
    or earlier match could still complete with more input: that is, when the held-back suffix
    (the longest suffix that is a proper prefix of any terminator) starts after it.
    """

    __slots__ = ("_at", "_data", "_found", "_hit", "_maxlen", "_parts", "frame_len", "terminator")

    def __init__(self, terms: tuple[bytes, ...]) -> None:
        self.terminator = terms
        self._parts = [_BytesReader(t) for t in terms]  # for their held-back search
        self._found = {t: TerminatorFound(t) for t in terms}
        self._maxlen = max(map(len, terms))
        self.frame_len = 0
        self._data: bytes | None = None  # the data object that _at and _hit describe
        self._at = [0] * len(terms)
        self._hit = [False] * len(terms)

    def _held_back(self, data: bytes, start: int) -> int:
        return max(part._held_back(data, start) for part in self._parts)

    def next_event(self, buf: TerminatorBuffer) -> Event:
        data = buf._data
        pos = buf._pos
        size = len(data)
        limit = buf._max_frame_size
        frame_start = pos - self.frame_len
        at = self._at
        hit = self._hit
        if data is not self._data:
            self._data = data
            at[:] = [pos] * len(at)
            hit[:] = [False] * len(hit)
        best = -1
        best_term = b""
        for i, term in enumerate(self.terminator):
            start = at[i]
            if start < pos or not hit[i]:
                start = max(start, pos)
                end = size if limit is None else min(size, frame_start + limit + len(term))
                if best >= 0:
                    end = min(end, best + len(term))  # only an earlier or equal start matters
                idx = data.find(term, start, end)
                if idx < 0:
                    at[i] = max(start, end - len(term) + 1)  # no occurrence starts before this
                    hit[i] = False
                    continue
                at[i] = start = idx
                hit[i] = True
            if best < 0 or start < best or (start == best and len(term) > len(best_term)):
                best = start
                best_term = term
        end = size
        if not buf._eof and (best < 0 or size - best < self._maxlen):
            # A match so close to the end may still lose to a longer or earlier one.
            end = size - self._held_back(data, pos)
        if 0 <= best < end:
            # Settled: nothing that starts at or before it can still grow into a match.
            n = best - pos
            if limit is not None and self.frame_len + n > limit:
                return _refuse(self, buf, limit)
            buf._pos = best + len(best_term)
            self.frame_len = 0
            found = self._found[best_term]
            if n:
                buf._found = found
                return data[pos:best]
            return found
        if limit is not None and self.frame_len + end - pos > limit:
            return _refuse(self, buf, limit)
        if end == pos:
            return END_OF_INPUT if buf._eof else NEED_DATA
        buf._pos = end
        self.frame_len += end - pos
        return data[pos:end]


class _RegexReader:
    """Searches for a compiled bytes regular expression (see ``_regex.py`` for the rule).

    The search window is ``2 * max_frame_size`` bytes from the frame start: the frame (at most
    ``max_frame_size``) and its terminator (the same again). Once that many bytes are buffered,
    the pattern is matched as if the input ended there.
    """

    __slots__ = ("_clear", "_data", "_end", "_plan", "frame_len", "terminator")

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self._plan = plan_regex(pattern)
        self.terminator = pattern
        self.frame_len = 0
        # For the data object _data buffered up to _end: no start before _clear is pending.
        self._data: bytes | None = None
        self._end = 0
        self._clear = 0

    def _first_pending(self, data: bytes, pos: int, stop: int, end: int) -> int:
        """The first start in [pos, stop] whose match attempt could change with more input, or
        -1; *end* (the end of the input so far) is always pending."""
        if data is not self._data or end != self._end:
            self._data = data
            self._end = end
            self._clear = 0
        start = max(pos, self._clear)
        reach = self._plan.reach
        if reach is not None:
            # An attempt inspects at most reach bytes: earlier starts are decided.
            start = max(start, end - reach + 1)
        first = self._plan.first.search
        pending = self._plan.pending.match
        while start <= stop:
            if start >= end:
                self._clear = end
                return end
            candidate = first(data, start, min(stop + 1, end))
            if candidate is None:
                break
            start = candidate.start()
            if pending(data, start, end):
                self._clear = start
                return start
            start += 1
        if stop >= end:
            self._clear = end
            return end
        self._clear = max(self._clear, stop + 1)
        return -1

    def next_event(self, buf: TerminatorBuffer) -> Event:
        data = buf._data
        pos = buf._pos
        size = len(data)
        if pos == size:
            return END_OF_INPUT if buf._eof else NEED_DATA
        limit = buf._max_frame_size
        end = size
        final = buf._eof
        window_full = False
        if limit is not None:
            window = pos - self.frame_len + 2 * limit
            if size >= window:
                end = window
                final = window_full = True
        match = self._plan.pattern.search(data, pos, end)
        if final:
            first_pending = end
        else:
            first_pending = self._first_pending(
                data, pos, end if match is None else match.start(), end
            )
            if first_pending < 0:
                first_pending = end
        if match is not None and match.start() < first_pending:
            start = match.start()
            n = start - pos
            if limit is not None and self.frame_len + n > limit:
                return _refuse(self, buf, limit)
            buf._pos = match.end()
            self.frame_len = 0
            found = TerminatorFound(match.group())
            if n:
                buf._found = found
                return data[pos:start]
            return found
        if limit is not None and (window_full or self.frame_len + first_pending - pos > limit):
            return _refuse(self, buf, limit)
        if first_pending == pos:
            return END_OF_INPUT if buf._eof else NEED_DATA
        buf._pos = first_pending
        self.frame_len += first_pending - pos
        return data[pos:first_pending]


class _CountReader:
    """Hands over exactly ``remaining`` more bytes, then the terminator."""

    __slots__ = ("_found", "count", "remaining")

    def __init__(self, count: int) -> None:
        self.count = count
        self.remaining = count
        self._found = TerminatorFound(count)

    @property
    def terminator(self) -> int:
        return self.remaining

    def next_event(self, buf: TerminatorBuffer) -> Event:
        data = buf._data
        pos = buf._pos
        avail = len(data) - pos
        if avail == 0:
            return END_OF_INPUT if buf._eof else NEED_DATA
        n = self.remaining
        if avail < n:
            self.remaining = n - avail
            buf._pos = len(data)
            return data[pos:] if pos else data
        # Satisfied: asynchat leaves the terminator at 0, which then acts as None.
        buf._pos = pos + n
        buf._reader = _NoneReader(0)
        buf._found = self._found
        return data[pos : pos + n]


class _NoneReader:
    """Hands over everything (terminator None, ``b""`` or ``0``)."""

    __slots__ = ("terminator",)

    def __init__(self, terminator: bytes | int | None) -> None:
        self.terminator = terminator

    def next_event(self, buf: TerminatorBuffer) -> Event:
        data = buf._data
        pos = buf._pos
        if pos == len(data):
            return END_OF_INPUT if buf._eof else NEED_DATA
        buf._pos = len(data)
        return data[pos:] if pos else data


_SearchReader: TypeAlias = "_BytesReader | _AnyOfReader | _RegexReader"
_Reader: TypeAlias = "_BytesReader | _AnyOfReader | _RegexReader | _CountReader | _NoneReader"
_SEARCH_READERS: Final = (_BytesReader, _AnyOfReader, _RegexReader)
_KINDS: Final = "bytes, a tuple of bytes, a compiled bytes regex, an int or None"


def _tuple_reader(terms: tuple[object, ...]) -> _AnyOfReader:
    if not terms:
        raise ValueError("a tuple terminator needs at least one bytes terminator, not ()")
    unique: dict[bytes, None] = {}
    for term in terms:
        if isinstance(term, (bytearray, memoryview)):
            term = bytes(term)
        if isinstance(term, str):
            raise TypeError(
                f"a tuple terminator holds bytes, not 'str' (encode it: {term.encode()!r})"
            )
        if not isinstance(term, bytes):
            raise TypeError(f"a tuple terminator holds bytes, not {type(term).__name__!r}")
        if not term:
            raise ValueError(
                "a tuple terminator cannot contain b'' (it would match everywhere); "
                "use None to collect everything"
            )
        unique[term] = None
    return _AnyOfReader(tuple(unique))


def _make_reader(term: object) -> _Reader:
    if term is None:
        return _NoneReader(None)
    if isinstance(term, (bytearray, memoryview)):
        term = bytes(term)
    if isinstance(term, bytes):
        return _BytesReader(term) if term else _NoneReader(term)
    if isinstance(term, tuple):
        return _tuple_reader(term)
    if isinstance(term, re.Pattern):
        return _RegexReader(term)
    if isinstance(term, int) and not isinstance(term, bool):
        if term < 0:
            raise ValueError(
                f"a count terminator must be >= 0, not {term}; use None to collect everything"
            )
        return _CountReader(term) if term else _NoneReader(term)
    if isinstance(term, str):
        raise TypeError(f"terminator must be {_KINDS}, not 'str' (encode it: {term.encode()!r})")
    if isinstance(term, list):
        raise TypeError(f"terminator must be {_KINDS}, not 'list' (pass a tuple: {tuple(term)!r})")
    raise TypeError(f"terminator must be {_KINDS}, not {type(term).__name__!r}")


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

    __slots__ = (
        "_data",
        "_eof",
        "_epoch",
        "_found",
        "_interrupted",
        "_max_frame_size",
        "_pending",
        "_pos",
        "_reader",
        "last_found",
    )

    def __init__(
        self, terminator: Terminator = None, *, max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self._data = b""
        self._pos = 0
        self._pending: list[bytes] = []
        self._eof = False
        self._found: TerminatorFound | None = None
        self._max_frame_size = _check_max_frame_size(max_frame_size)
        self._reader: _Reader = _make_reader(terminator)
        self._interrupted = False
        # Bumped by whatever a hook may do to the buffer (set_terminator, clear, feed, interrupt,
        # a new max_frame_size): deliver()'s loop over buffered frames goes on while it is same.
        self._epoch = 0
        #: The last :class:`TerminatorFound` that :meth:`deliver` handed to its hook, or None.
        self.last_found: TerminatorFound | None = None

    @property
    def max_frame_size(self) -> int | None:
        """The most bytes one frame may have with a searching terminator (None: no limit)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int | None) -> None:
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
        self._reader = _make_reader(terminator)
        self._epoch += 1

    def get_terminator(self) -> Terminator:
        """The current terminator; a count terminator reports the bytes still wanted."""
        return self._reader.terminator

    @property
    def terminator(self) -> Terminator:
        """The current terminator (as :meth:`get_terminator`)."""
        return self._reader.terminator

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
        reader = self._reader
        if isinstance(reader, _SEARCH_READERS):
            return reader.frame_len > 0
        if isinstance(reader, _CountReader):
            return reader.remaining < reader.count
        return False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Store *data* for the next events; never processes anything itself.

        Raises:
            RuntimeError: :meth:`feed_eof` was already called.
            TypeError: *data* is not bytes-like.
        """
        if type(data) is not bytes:
            if isinstance(data, str):
                raise TypeError("feed() takes bytes, not 'str' (encode it first)")
            data = bytes(data)
        if self._eof:
            raise RuntimeError("feed() after feed_eof(): the input has already ended")
        if not data:
            return
        self._epoch += 1
        if self._pos == len(self._data) and not self._pending:
            self._data = data
            self._pos = 0
        else:
            self._pending.append(data)

    def feed_eof(self) -> None:
        """Mark the end of the input: held-back bytes are handed over, then END_OF_INPUT."""
        self._eof = True

    def clear(self) -> bytes:
        """Drop every byte fed but not yet handed over (and a terminator not yet reported).

        Returns:
            The dropped bytes, for a driver that wants to hand them to someone else.
        """
        dropped = self._data[self._pos :] + b"".join(self._pending)
        self._epoch += 1
        self._data = b""
        self._pos = 0
        self._pending.clear()
        self._found = None
        if isinstance(self._reader, _SEARCH_READERS):
            self._reader.frame_len = 0
        return dropped

    def next_event(self) -> Event:
        """Return the next event (see the class docstring).

        Raises:
            FrameTooLongError: a frame exceeded ``max_frame_size``; it is raised again on every
                call until the terminator or the limit is changed or the buffer cleared.
        """
        found = self._found
        if found is not None:
            self._found = None
            return found
        if self._pending:
            # Joined once, so many small feeds between drains stay linear.
            self._data = self._data[self._pos :] + b"".join(self._pending)
            self._pos = 0
            self._pending.clear()
        elif self._pos == len(self._data):
            # Everything handed over: every reader would say so, without searching.
            return END_OF_INPUT if self._eof else NEED_DATA
        return self._reader.next_event(self)

    def deliver(
        self,
        collect: Callable[[bytes], object],
        found: Callable[[], object],
        max_frames: int,
    ) -> object:
        """Hand events to callbacks, asynchat style, until there is a reason to stop.

        Each piece of collected data goes to ``collect(data)``, each terminator to ``found()``
        (:attr:`last_found` tells which). This is :meth:`next_event` in a loop, with the common
        case (a ``bytes`` terminator) inlined: a driver's per-frame cost is what decides its
        speed. It returns:

        * :data:`NEED_DATA` or :data:`END_OF_INPUT` when the input is used up;
        * a hook's result when it is not None (a coroutine, say): the caller awaits it, then
          calls ``deliver`` again;
        * None after *max_frames* terminators, or when a hook called :meth:`interrupt`, so the
          caller can yield to others (or stop) before going on.

        Raises:
            FrameTooLongError: as :meth:`next_event`.
        """
        frames = 0
        while True:
            if self._interrupted:
                self._interrupted = False
                return None
            event: Event | None = self._found
            if event is not None:
                self._found = None
            else:
                reader = self._reader
                if type(reader) is _BytesReader and not self._pending and not reader.frame_len:
                    # The inlined _BytesReader.next_event, in a loop over every frame whose
                    # terminator is in the buffer within the limit, for as long as no hook
                    # changed the buffer (_epoch); anything else takes the general path. A frame
                    # that began in an earlier read does too: with small reads most frames do,
                    # and the search that fails here would only be repeated there.
                    data = self._data
                    pos = self._pos
                    term = reader.term
                    size = len(term)
                    found_event = reader._found
                    limit = self._max_frame_size
                    # Never look further than the limit allows.
                    stop = len(data) if limit is None else pos + limit + size
                    epoch = self._epoch
                    find = data.find
                    size_data = len(data)
                    changed = False
                    while (idx := find(term, pos, stop)) >= 0:
                        end = idx + size
                        self._pos = end
                        reader.frame_len = 0
                        if idx > pos:
                            self._found = found_event  # still due if collect() returns an awaitable
                            result = collect(data[pos:idx])
                            if result is not None:
                                return result
                            if self._found is None:  # collect() cleared the buffer
                                changed = True
                                break
                            self._found = None
                            if self._epoch != epoch:  # collect() changed the buffer
                                event = found_event  # found() is still due, by the path below
                                changed = True
                                break
                        self.last_found = found_event
                        result = found()
                        if result is not None:
                            return result
                        frames += 1
                        if frames >= max_frames:
                            return None
                        if self._epoch != epoch:
                            changed = True
                            break
                        if end == size_data:  # all handed over (one request per read, say)
                            return END_OF_INPUT if self._eof else NEED_DATA
                        pos = end
                        if limit is not None:
                            stop = end + limit + size
                    if changed and event is None:
                        continue
                if event is None:
                    event = self.next_event()
            if type(event) is bytes:
                result = collect(event)
                if result is not None:
                    return result
            elif type(event) is TerminatorFound:
                self.last_found = event
                result = found()
                if result is not None:
                    return result
                frames += 1
                if frames >= max_frames:
                    return None
            else:
                return event  # NEED_DATA or END_OF_INPUT

    def interrupt(self) -> None:
        """Make a running :meth:`deliver` return None after the current hook."""
        self._interrupted = True
        self._epoch += 1

    def next_frames(
        self, pieces: list[bytes], max_frames: int | None = None
    ) -> tuple[list[bytes], TerminatorFound | Signal]:
        """Hand over every complete frame already buffered at once, each joined, without its
        terminator: :meth:`next_event` in a loop, for a pull-style driver.

        A ``bytes`` terminator takes a fast path: the buffered bytes are split with one
        ``bytes.split`` (or a ``bytes.find`` loop), not one event per piece. Other terminators
        loop over :meth:`next_event`; a count terminator gives at most one frame (the
        terminator then acts as None).

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
        reader = self._reader
        if (
            max_frames == 1
            and type(reader) is _BytesReader
            and self._found is None
            and not self._pending
            and not pieces
            and not reader.frame_len
        ):
            # One frame at a time (FramedStream.frames() takes them so): one find, no loop.
            data = self._data
            pos = self._pos
            term = reader.term
            limit = self._max_frame_size
            if limit is None:
                idx = data.find(term, pos)
            else:
                idx = data.find(term, pos, pos + limit + len(term))
            if idx >= 0:
                self._pos = idx + len(term)
                return [data[pos:idx]], reader._found
        elif max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or None for no limit), not {max_frames}")
        frames: list[bytes] = []
        last: TerminatorFound | Signal = NEED_DATA
        # Frames still wanted; negative means no limit (it only decreases, so it never reaches
        # 0, and bytes.split takes a negative maxsplit as "all").
        left = -1 if max_frames is None else max_frames
        while True:
            reader = self._reader
            if type(reader) is _BytesReader and self._found is None:
                # _BytesReader.next_event for many frames in one loop (the same frames: the
                # leftmost occurrence after the previous one, within the limit).
                if self._pending:
                    self._data = self._data[self._pos :] + b"".join(self._pending)
                    self._pos = 0
                    self._pending.clear()
                data = self._data
                pos = self._pos
                term = reader.term
                size = len(term)
                limit = self._max_frame_size
                taken = len(frames)
                if pieces or reader.frame_len:  # first finish the frame handed over so far
                    if limit is None:
                        idx = data.find(term, pos)
                    else:
                        idx = data.find(term, pos, pos + limit - reader.frame_len + size)
                    if idx >= 0:
                        pieces.append(data[pos:idx])
                        frames.append(b"".join(pieces))
                        pieces.clear()
                        reader.frame_len = 0
                        pos = idx + size
                        left -= 1
                if left and not pieces and not reader.frame_len:
                    split = False
                    # bytes.split is one C call for all frames, but scans byte by byte where
                    # bytes.find uses memchr: split is faster for frames up to about 512 bytes
                    # (5x for 32-byte lines), find for longer ones (measured on CPython 3.11
                    # with b"\n"). The first frame's length picks one.
                    if (max_frames is None or pos == 0) and data.find(term, pos, pos + 512) >= 0:
                        # It copies data[pos:] when pos > 0, which is linear only because
                        # without max_frames every complete frame is taken (the rest is an
                        # unfinished frame); with max_frames, only at pos 0.
                        parts = (data[pos:] if pos else data).split(term, left)
                        rest = parts.pop()
                        if limit is None or not parts or max(map(len, parts)) <= limit:
                            frames += parts
                            left -= len(parts)
                            pos = len(data) - len(rest)
                            split = True
                    if not split:  # a frame over the limit lies ahead, or pos > 0
                        find = data.find
                        append = frames.append
                        extent = None if limit is None else limit + size
                        while left:
                            if extent is None:
                                idx = find(term, pos)
                            else:
                                idx = find(term, pos, pos + extent)
                            if idx < 0:
                                break
                            append(data[pos:idx])
                            pos = idx + size
                            left -= 1
                if len(frames) > taken:
                    self._pos = pos
                    last = reader._found
                    if not left:
                        break
            # The general path: any terminator, and the unfinished rest (held-back bytes,
            # END_OF_INPUT, the limit) for a bytes one.
            try:
                event = self.next_event()
                while type(event) is bytes:
                    pieces.append(event)
                    event = self.next_event()
            except FrameTooLongError:
                if frames:
                    break  # the frames first; the next call raises it again
                raise
            if type(event) is TerminatorFound:
                frames.append(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                pieces.clear()
                last = event
                left -= 1
                if not left:
                    break
            else:
                if not frames:
                    last = event  # type: ignore[assignment]  # NEED_DATA or END_OF_INPUT
                break
        return frames, last

    def __repr__(self) -> str:
        return (
            f"<TerminatorBuffer terminator={self.terminator!r} buffered={self.buffered}"
            f"{' eof' if self._eof else ''}>"
        )

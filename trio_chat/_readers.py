"""The readers: one small object per terminator kind, the only place frames are searched for.

This module never imports trio. Each reader answers one question for :class:`TerminatorBuffer`
(and through it for every driver: ``next_event``, ``deliver``, ``next_frames``)::

    end, resume, found = reader.find(data, pos, eof, limit)

* ``data[pos:end]`` is data of the current frame that can be handed over now (possibly empty);
* ``resume`` is where the next search starts (past the terminator when one was found);
* ``found`` is what matched (bytes, or the count of a count terminator) when the frame ended at
  ``end``, else None. ``end == resume == pos`` with ``found`` None means "feed more".

A reader keeps only its own per-frame state (how much of the frame it handed over, where its
searches stopped); it never writes the buffer's fields. It is called with ``pos < len(data)``.

Linear time: a bytes search resumes at the held-back terminator prefix (at most
``len(terminator) - 1`` bytes), so no byte is examined more than ``len(terminator)`` times;
the tuple reader remembers, per terminator, where its search stopped in the current data
object; the regex reader's cost is described in ``_regex.py``.
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias

from ._exceptions import FrameTooLongError
from ._regex import plan_regex

__all__ = ["AnyOfReader", "BytesReader", "CountReader", "NoneReader", "Reader", "make_reader"]

#: What a reader's ``find`` returns: (end of the data handed over, where to resume, what matched).
Found: TypeAlias = "tuple[int, int, bytes | int | None]"


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
_SHORT_TERMINATOR: Final = 32


def _refuse(reader: BytesReader | AnyOfReader | RegexReader, pos: int, limit: int) -> Found:
    """The frame is over the limit: hand over what the limit allows, then raise.

    Handing over the frame up to the limit first keeps the events before the error the same
    however the input was chunked.
    """
    allowed = limit - reader.frame_len
    if allowed <= 0:
        raise FrameTooLongError(limit, reader.terminator)
    reader.frame_len = limit
    return pos + allowed, pos + allowed, None


class BytesReader:
    """Searches for a bytes terminator; holds back a possible terminator prefix."""

    __slots__ = ("_fail", "_prefixes", "frame_len", "size", "terminator")

    def __init__(self, term: bytes) -> None:
        self.terminator = term
        self.size = len(term)
        self.frame_len = 0  # bytes of the current frame handed over so far
        if len(term) <= _SHORT_TERMINATOR:
            self._prefixes = tuple(term[:n] for n in range(len(term) - 1, 0, -1))
            self._fail: list[int] | None = None
        else:
            self._prefixes = ()
            self._fail = _failure_function(term)

    def restart(self) -> None:
        self.frame_len = 0

    def held_back(self, data: bytes, start: int) -> int:
        """Length of the longest terminator prefix that ``data[start:]`` ends with."""
        fail = self._fail
        if fail is None:
            for prefix in self._prefixes:
                if data.endswith(prefix, start):
                    return len(prefix)
            return 0
        term = self.terminator
        q = 0
        for c in data[max(start, len(data) - len(term) + 1) :]:
            while q and term[q] != c:
                q = fail[q - 1]
            if term[q] == c:
                q += 1
        return q

    def find(self, data: bytes, pos: int, eof: bool, limit: int | None) -> Found:
        term = self.terminator
        if limit is None:
            idx = data.find(term, pos)
        else:
            # Never look further than the limit allows: a hostile peer's megabytes are refused
            # after scanning at most max_frame_size + len(term) bytes.
            idx = data.find(term, pos, pos + limit - self.frame_len + self.size)
        if idx >= 0:
            self.frame_len = 0
            return idx, idx + self.size, term
        end = len(data) if eof else len(data) - self.held_back(data, pos)
        if limit is not None and self.frame_len + end - pos > limit:
            return _refuse(self, pos, limit)
        self.frame_len += end - pos
        return end, end, None


class AnyOfReader:
    """Searches for several bytes terminators at once: the earliest match wins, and the longest
    among those starting at the same place.

    Each terminator remembers how far it has been searched in the current data object (``_at``)
    and whether an occurrence starts there (``_hit``), so a terminator that does not occur in a
    read is searched once per read, not once per frame. A match is reported only when no longer
    or earlier match could still complete with more input: that is, when the held-back suffix
    (the longest suffix that is a proper prefix of any terminator) starts after it.
    """

    __slots__ = ("_at", "_data", "_hit", "_maxlen", "_parts", "frame_len", "terminator")

    def __init__(self, terms: tuple[bytes, ...]) -> None:
        self.terminator = terms
        self._parts = [BytesReader(t) for t in terms]  # for their held-back search
        self._maxlen = max(map(len, terms))
        self.frame_len = 0
        self._data: bytes | None = None  # the data object that _at and _hit describe
        self._at = [0] * len(terms)
        self._hit = [False] * len(terms)

    def restart(self) -> None:
        self.frame_len = 0
        self._data = None

    def find(self, data: bytes, pos: int, eof: bool, limit: int | None) -> Found:
        size = len(data)
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
        if not eof and (best < 0 or size - best < self._maxlen):
            # A match so close to the end may still lose to a longer or earlier one.
            end = size - max(part.held_back(data, pos) for part in self._parts)
        if 0 <= best < end:
            # Settled: nothing that starts at or before it can still grow into a match.
            if limit is not None and self.frame_len + best - pos > limit:
                return _refuse(self, pos, limit)
            self.frame_len = 0
            return best, best + len(best_term), best_term
        if limit is not None and self.frame_len + end - pos > limit:
            return _refuse(self, pos, limit)
        self.frame_len += end - pos
        return end, end, None


class RegexReader:
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

    def restart(self) -> None:
        self.frame_len = 0
        self._data = None

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

    def find(self, data: bytes, pos: int, eof: bool, limit: int | None) -> Found:
        size = len(data)
        end = size
        final = eof
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
            if limit is not None and self.frame_len + start - pos > limit:
                return _refuse(self, pos, limit)
            self.frame_len = 0
            return start, match.end(), match.group()
        if limit is not None and (window_full or self.frame_len + first_pending - pos > limit):
            return _refuse(self, pos, limit)
        self.frame_len += first_pending - pos
        return first_pending, first_pending, None


class CountReader:
    """Hands over exactly ``count`` bytes, then the terminator; then everything, as asynchat's
    satisfied count terminator (``0``) does.

    One instance per buffer is reused for every count terminator: ``start(n)`` costs two
    assignments, which matters to protocols that set a count for every payload (RESP, HTTP).
    """

    __slots__ = ("count", "remaining")

    def __init__(self) -> None:
        self.count = 0  # the count that was set
        self.remaining = 0  # bytes still wanted; 0: satisfied, acts as None

    def start(self, count: int) -> None:
        self.count = count
        self.remaining = count

    def restart(self) -> None:
        """Nothing to do: a count terminator restarts only by being set again."""

    @property
    def terminator(self) -> int:
        return self.remaining

    @property
    def frame_len(self) -> int:
        return self.count - self.remaining if self.remaining else 0

    def find(self, data: bytes, pos: int, eof: bool, limit: int | None) -> Found:
        n = self.remaining
        size = len(data)
        if size - pos < n:
            self.remaining = n - (size - pos)
            return size, size, None
        if not n:  # satisfied: everything, as None
            return size, size, None
        self.remaining = 0
        return pos + n, pos + n, self.count


class NoneReader:
    """Hands over everything (terminator None, ``b""`` or ``0``)."""

    __slots__ = ("terminator",)

    frame_len: Final = 0

    def __init__(self, terminator: bytes | int | None) -> None:
        self.terminator = terminator

    def restart(self) -> None:
        """Nothing to do: there are no frames."""

    def find(self, data: bytes, pos: int, eof: bool, limit: int | None) -> Found:
        return len(data), len(data), None


Reader: TypeAlias = "BytesReader | AnyOfReader | RegexReader | CountReader | NoneReader"

_KINDS: Final = "bytes, a tuple of bytes, a compiled bytes regex, an int or None"


def _tuple_reader(terms: tuple[object, ...]) -> AnyOfReader:
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
    return AnyOfReader(tuple(unique))


def make_reader(term: object) -> Reader:
    """A new reader for *term*, or an error that says what to pass instead."""
    if term is None:
        return NoneReader(None)
    if isinstance(term, (bytearray, memoryview)):
        term = bytes(term)
    if isinstance(term, bytes):
        return BytesReader(term) if term else NoneReader(term)
    if isinstance(term, tuple):
        return _tuple_reader(term)
    if isinstance(term, re.Pattern):
        return RegexReader(term)
    if isinstance(term, int) and not isinstance(term, bool):
        if term < 0:
            raise ValueError(
                f"a count terminator must be >= 0, not {term}; use None to collect everything"
            )
        if term:
            reader = CountReader()
            reader.start(term)
            return reader
        return NoneReader(term)
    if isinstance(term, str):
        raise TypeError(f"terminator must be {_KINDS}, not 'str' (encode it: {term.encode()!r})")
    if isinstance(term, list):
        raise TypeError(f"terminator must be {_KINDS}, not 'list' (pass a tuple: {tuple(term)!r})")
    raise TypeError(f"terminator must be {_KINDS}, not {type(term).__name__!r}")

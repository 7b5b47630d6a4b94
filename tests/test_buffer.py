"""Tests of the sans-IO TerminatorBuffer: direct, exhaustive, property-based and differential."""

from __future__ import annotations

import itertools
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, SupportsIndex, TypeAlias, overload

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    FrameTooLongError,
    Terminator,
    TerminatorBuffer,
    TerminatorFound,
    find_prefix_at_end,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asynchat as _asynchat  # stdlib on 3.11; the pyasynchat package on 3.12+

asynchat: Any = _asynchat  # typeshed's stub lacks find_prefix_at_end and is gone on 3.12

# The terminator kinds asynchat knows (the reference model and the stdlib take only these).
AsynchatTerminator: TypeAlias = "bytes | int | None"

# A normalised event: ("data", bytes) with consecutive data merged, ("found", terminator),
# ("error", limit) or ("end", None).
Norm = tuple[str, Any]


def drain(buf: TerminatorBuffer, out: list[Norm], schedule: list[Terminator]) -> bool:
    """Drain *buf* into *out*; at each TerminatorFound switch to the next terminator.

    Returns False once an error or END_OF_INPUT was seen.
    """
    while True:
        try:
            event = buf.next_event()
        except FrameTooLongError as exc:
            out.append(("error", exc.limit))
            return False
        if event is NEED_DATA:
            return True
        if event is END_OF_INPUT:
            out.append(("end", None))
            return False
        if isinstance(event, bytes):
            assert event, "collected data must never be empty"
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + event)
            else:
                out.append(("data", event))
        else:
            assert isinstance(event, TerminatorFound)
            out.append(("found", event.terminator))
            if schedule:
                buf.set_terminator(schedule.pop(0))


def run_chunks(
    chunks: Iterable[bytes],
    schedule: Sequence[Terminator],
    *,
    max_frame_size: int | None = None,
    eof: bool = True,
) -> list[Norm]:
    sched = list(schedule)
    buf = TerminatorBuffer(sched.pop(0), max_frame_size=max_frame_size)
    out: list[Norm] = []
    for chunk in chunks:
        buf.feed(chunk)
        if not drain(buf, out, sched):
            return out
    if eof:
        buf.feed_eof()
        drain(buf, out, sched)
    return out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def model(
    data: bytes, schedule: Sequence[AsynchatTerminator], max_frame_size: int | None
) -> list[Norm]:
    """A straightforward whole-input reference for the events."""
    sched = list(schedule)
    term = sched.pop(0)
    out: list[Norm] = []
    pos = 0
    while pos < len(data):
        if not term:  # None, b"" and 0
            out.append(("data", data[pos:]))
            break
        if isinstance(term, int):
            piece = data[pos : pos + term]
            out.append(("data", piece))
            pos += len(piece)
            if len(piece) < term:
                break
            out.append(("found", term))
        else:
            idx = data.find(term, pos)
            frame = data[pos:] if idx < 0 else data[pos:idx]
            if max_frame_size is not None and len(frame) > max_frame_size:
                if max_frame_size:
                    out.append(("data", frame[:max_frame_size]))
                out.append(("error", max_frame_size))
                return out
            if frame:
                out.append(("data", frame))
            if idx < 0:
                break
            pos = idx + len(term)
            out.append(("found", term))
        # When the schedule runs out the terminator stays, except that a satisfied count
        # terminator becomes 0 (asynchat parity), which acts as None.
        term = sched.pop(0) if sched else (0 if isinstance(term, int) else term)
    out.append(("end", None))
    return out


terminators = st.one_of(
    st.binary(min_size=1, max_size=4),
    st.integers(min_value=0, max_value=12),
    st.none(),
    st.sampled_from([b"\r\n", b"\n", b"aa", b"aba", b"qqq"]),
)
# Data over a tiny alphabet so terminators actually occur, overlap and straddle chunks.
payloads = st.binary(max_size=200).map(lambda b: bytes(b"ab\r\nq"[x % 5] for x in b))


@settings(max_examples=400, deadline=None)
@given(
    data=payloads,
    schedule=st.lists(terminators, min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    max_frame_size=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
)
def test_any_chunking_gives_the_events_of_the_whole(
    data: bytes, schedule: list[AsynchatTerminator], cuts: list[int], max_frame_size: int | None
) -> None:
    whole = run_chunks([data], schedule, max_frame_size=max_frame_size)
    assert run_chunks(split(data, cuts), schedule, max_frame_size=max_frame_size) == whole
    assert whole == model(data, schedule, max_frame_size)


@settings(max_examples=200, deadline=None)
@given(
    data=payloads,
    schedule=st.lists(terminators, min_size=1, max_size=8),
)
def test_byte_by_byte_gives_the_events_of_the_whole(
    data: bytes, schedule: list[Terminator]
) -> None:
    one_by_one = [data[i : i + 1] for i in range(len(data))]
    assert run_chunks(one_by_one, schedule) == run_chunks([data], schedule)


@settings(max_examples=200, deadline=None)
@given(
    data=payloads,
    term=st.binary(min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_remainder_after_a_drain_is_only_a_terminator_prefix(
    data: bytes, term: bytes, cuts: list[int]
) -> None:
    # The linear-time argument: after draining, at most len(term) - 1 bytes stay unconsumed, so
    # the next search re-examines at most that many bytes, and the next feed stores its chunk
    # without copying anything.
    buf = TerminatorBuffer(term, max_frame_size=None)
    for chunk in split(data, cuts):
        buf.feed(chunk)
        while buf.next_event() is not NEED_DATA:
            pass
        assert buf.buffered <= len(term) - 1


def test_feed_after_full_drain_stores_the_chunk_without_copying() -> None:
    buf = TerminatorBuffer(b"\n")
    chunk = b"x" * 1000 + b"\n" + b"y" * 1000 + b"\n"
    buf.feed(chunk)
    assert buf._data is chunk
    events = [buf.next_event() for _ in range(5)]
    assert events[-1] is NEED_DATA


# ---------------------------------------------------------------- max_frame_size


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"abc"])
@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_frame_of_exactly_the_limit_is_accepted_at_every_split(term: bytes, limit: int) -> None:
    frame = bytes(range(ord("A"), ord("A") + limit))
    data = frame + term
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            chunks = [data[:a], data[a:b], data[b:]]
            events = run_chunks(chunks, [term], max_frame_size=limit, eof=False)
            assert events[: 2 if limit else 1] == (
                [("data", frame), ("found", term)] if limit else [("found", term)]
            ), (a, b)
            assert ("error", limit) not in events


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"abc"])
@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_frame_one_byte_over_the_limit_is_refused_at_every_split(term: bytes, limit: int) -> None:
    frame = bytes(range(ord("A"), ord("A") + limit + 1))
    data = frame + term
    expected: list[Norm] = [("data", frame[:limit])] if limit else []
    expected.append(("error", limit))
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            chunks = [data[:a], data[a:b], data[b:]]
            assert run_chunks(chunks, [term], max_frame_size=limit) == expected, (a, b)


def test_held_back_prefix_counts_at_eof() -> None:
    # "abcd\r" then EOF is a 5-byte incomplete frame: over a limit of 4.
    assert run_chunks([b"abcd\r"], [b"\r\n"], max_frame_size=4) == [
        ("data", b"abcd"),
        ("error", 4),
    ]
    assert run_chunks([b"abcd\r"], [b"\r\n"], max_frame_size=5) == [
        ("data", b"abcd\r"),
        ("end", None),
    ]


def test_frame_too_long_error_is_sticky_and_speaks() -> None:
    buf = TerminatorBuffer(b"\n", max_frame_size=3)
    buf.feed(b"abcdef")
    assert buf.next_event() == b"abc"
    with pytest.raises(
        FrameTooLongError, match=r"more than 3 bytes .* raise max_frame_size"
    ) as info:
        buf.next_event()
    assert info.value.limit == 3
    assert info.value.terminator == b"\n"
    with pytest.raises(FrameTooLongError):
        buf.next_event()
    buf.set_terminator(None)  # the caller may recover by changing the terminator
    assert buf.next_event() == b"def"


def test_search_window_is_bounded_by_the_limit() -> None:
    buf = TerminatorBuffer(b"\n", max_frame_size=10)
    buf.feed(b"x" * 1_000_000 + b"\n")
    assert buf.next_event() == b"x" * 10
    with pytest.raises(FrameTooLongError):
        buf.next_event()


def test_count_and_none_terminators_ignore_the_limit() -> None:
    assert run_chunks([b"x" * 100], [50], max_frame_size=3) == [
        ("data", b"x" * 50),
        ("found", 50),
        ("data", b"x" * 50),
        ("end", None),
    ]
    assert run_chunks([b"x" * 100], [None], max_frame_size=3) == [
        ("data", b"x" * 100),
        ("end", None),
    ]


# -------------------------------------------------------------------- terminators


def test_terminator_change_applies_to_buffered_bytes() -> None:
    buf = TerminatorBuffer(b"\r\n\r\n")
    buf.feed(b"POST / HTTP/1.0\r\nContent-Length: 4\r\n\r\nbodyEXTRA")
    assert buf.next_event() == b"POST / HTTP/1.0\r\nContent-Length: 4"
    assert buf.next_event() == TerminatorFound(b"\r\n\r\n")
    buf.set_terminator(4)
    assert buf.next_event() == b"body"
    assert buf.next_event() == TerminatorFound(4)
    assert buf.get_terminator() == 0
    buf.set_terminator(None)
    assert buf.next_event() == b"EXTRA"
    assert buf.next_event() is NEED_DATA


def test_count_terminator_reports_bytes_still_wanted() -> None:
    buf = TerminatorBuffer(10)
    buf.feed(b"abc")
    assert buf.next_event() == b"abc"
    assert buf.get_terminator() == 7
    assert buf.frame_started
    buf.feed(b"defghijXYZ")
    assert buf.next_event() == b"defghij"
    assert buf.next_event() == TerminatorFound(10)
    assert buf.get_terminator() == 0
    assert not buf.frame_started
    assert buf.next_event() == b"XYZ"  # 0 acts as None


def test_terminator_found_survives_a_change_made_between_data_and_found() -> None:
    # asynchat calls found_terminator even if collect_incoming_data changed the terminator.
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"abc\ndef")
    assert buf.next_event() == b"abc"
    buf.set_terminator(2)
    assert buf.next_event() == TerminatorFound(b"\n")
    assert buf.next_event() == b"de"


@pytest.mark.parametrize("empty", [b"", 0, None])
def test_empty_and_zero_act_as_none(empty: Terminator) -> None:
    buf = TerminatorBuffer(empty)
    assert buf.get_terminator() == empty
    buf.feed(b"a\nb")
    assert buf.next_event() == b"a\nb"
    assert buf.next_event() is NEED_DATA


def test_bad_terminators_are_refused_with_a_fix() -> None:
    buf = TerminatorBuffer()
    with pytest.raises(TypeError, match=r"not 'str' \(encode it: b'\\r\\n'\)"):
        buf.set_terminator("\r\n")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be >= 0"):
        buf.set_terminator(-1)
    with pytest.raises(TypeError, match="not 'float'"):
        buf.set_terminator(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'bool'"):
        buf.set_terminator(True)
    buf.set_terminator(bytearray(b"\n"))  # type: ignore[arg-type]
    assert buf.get_terminator() == b"\n"
    with pytest.raises(ValueError, match="max_frame_size must be >= 0"):
        TerminatorBuffer(max_frame_size=-1)
    with pytest.raises(TypeError, match="max_frame_size must be an int or None"):
        TerminatorBuffer(max_frame_size=1.0)  # type: ignore[arg-type]


def test_feed_rules() -> None:
    buf = TerminatorBuffer(b"\n")
    with pytest.raises(TypeError, match="not 'str'"):
        buf.feed("abc")  # type: ignore[arg-type]
    source = bytearray(b"ab\n")
    buf.feed(source)
    source[:] = b"XX\n"  # the buffer keeps what was fed, not the caller's mutable object
    assert buf.next_event() == b"ab"
    buf.feed(b"")
    buf.feed_eof()
    assert buf.eof
    with pytest.raises(RuntimeError, match="after feed_eof"):
        buf.feed(b"x")


def test_eof_hands_over_the_held_back_prefix() -> None:
    buf = TerminatorBuffer(b"\r\n")
    buf.feed(b"line\r")
    assert buf.next_event() == b"line"
    assert buf.next_event() is NEED_DATA
    assert buf.buffered == 1
    buf.feed_eof()
    assert buf.next_event() == b"\r"
    assert buf.next_event() is END_OF_INPUT
    assert buf.next_event() is END_OF_INPUT


def test_clear_drops_unprocessed_input() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"abc\ndef")
    buf.feed(b"more")
    assert buf.next_event() == b"abc"
    buf.clear()
    assert buf.buffered == 0
    assert buf.next_event() == TerminatorFound(b"\n")  # consumed already: not input
    assert buf.next_event() is NEED_DATA
    assert "TerminatorBuffer" in repr(buf)


def test_long_terminators_use_the_same_rules() -> None:
    # Over 32 bytes the held-back prefix is found by a KMP scan.
    term = b"a" * 40 + b"b"
    data = b"x" * 10 + b"a" * 45 + b"b" + b"tail" + b"a" * 39
    for cut in range(len(data) + 1):
        events = run_chunks([data[:cut], data[cut:]], [term], eof=False)
        assert events[:3] == [("data", b"x" * 10 + b"a" * 5), ("found", term), ("data", b"tail")]
    buf = TerminatorBuffer(term)
    buf.feed(data)
    while buf.next_event() is not NEED_DATA:
        pass
    assert buf.buffered == 39


@given(haystack=st.binary(max_size=20).map(lambda b: bytes(b"ab"[x % 2] for x in b)))
def test_kmp_prefix_matches_find_prefix_at_end(haystack: bytes) -> None:
    term = b"ab" * 20
    buf = TerminatorBuffer(term, max_frame_size=None)
    if term in haystack:
        return
    buf.feed(haystack)
    while buf.next_event() is not NEED_DATA:
        pass
    assert buf.buffered == find_prefix_at_end(haystack, term)


def test_find_prefix_at_end_parity() -> None:
    cases = [
        (b"qwerty\r", b"\r\n"),
        (b"qwertydkjf", b"\r\n"),
        (b"", b"\r\n"),
        (b"aaa", b"aab"),
        (b"xq", b"qqq"),
        (b"xqq", b"qqq"),
    ]
    for haystack, needle in cases:
        assert find_prefix_at_end(haystack, needle) == asynchat.find_prefix_at_end(
            haystack, needle
        ), (haystack, needle)
    # asynchat returns -1 for an empty needle; an empty terminator has no prefix to hold back.
    assert find_prefix_at_end(b"abc", b"") == 0


# ------------------------------------------------------------- differential


class _Reference(asynchat.async_chat):  # type: ignore[misc]  # Any base class
    """The stdlib asynchat, fed through handle_read with a fake recv()."""

    def __init__(self, chunks: list[bytes], schedule: list[AsynchatTerminator]) -> None:
        asynchat.async_chat.__init__(self, sock=None, map={})
        self.chunks = chunks
        self.schedule = schedule
        self.set_terminator(schedule.pop(0))
        self.pieces: list[bytes] = []
        self.frames: list[bytes] = []

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        self.frames.append(b"".join(self.pieces))
        self.pieces.clear()
        if self.schedule:
            self.set_terminator(self.schedule.pop(0))


@settings(max_examples=300, deadline=None)
@given(
    data=payloads,
    schedule=st.lists(terminators, min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_same_frames_as_stdlib_asynchat(
    data: bytes, schedule: list[AsynchatTerminator], cuts: list[int]
) -> None:
    chunks = split(data, cuts)
    reference = _Reference(list(chunks), list(schedule))
    for _ in chunks:
        reference.handle_read()

    sched = list(schedule)
    buf = TerminatorBuffer(sched.pop(0), max_frame_size=None)
    frames: list[bytes] = []
    pieces: list[bytes] = []
    for chunk in chunks:
        buf.feed(chunk)
        while (event := buf.next_event()) is not NEED_DATA:
            if isinstance(event, bytes):
                pieces.append(event)
            else:
                frames.append(b"".join(pieces))
                pieces.clear()
                if sched:
                    buf.set_terminator(sched.pop(0))
    assert frames == reference.frames
    # Both hold back the same bytes and have handed over the same partial frame.
    assert b"".join(pieces) == b"".join(reference.pieces)
    assert buf.get_terminator() == reference.get_terminator()


# ------------------------------------------------------- tuple terminators (beyond asynchat)


def model_any_of(data: bytes, terms: tuple[bytes, ...], max_frame_size: int | None) -> list[Norm]:
    """Whole-input reference for a tuple terminator: the earliest match wins, then the longest."""
    out: list[Norm] = []
    pos = 0
    while True:
        best: tuple[int, bytes] | None = None
        for term in terms:
            idx = data.find(term, pos)
            if idx >= 0 and (
                best is None or idx < best[0] or (idx == best[0] and len(term) > len(best[1]))
            ):
                best = (idx, term)
        frame = data[pos:] if best is None else data[pos : best[0]]
        if max_frame_size is not None and len(frame) > max_frame_size:
            if max_frame_size:
                out.append(("data", frame[:max_frame_size]))
            out.append(("error", max_frame_size))
            return out
        if frame:
            out.append(("data", frame))
        if best is None:
            out.append(("end", None))
            return out
        out.append(("found", best[1]))
        pos = best[0] + len(best[1])


tuples = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=4).map(lambda b: bytes(b"ab\r\nq"[x % 5] for x in b)),
        st.sampled_from([b"\r\n", b"\n", b"\n\n", b"aa", b"aba", b"b", b"qqq"]),
    ),
    min_size=1,
    max_size=4,
).map(tuple)


@settings(max_examples=400, deadline=None)
@given(
    data=payloads,
    terms=tuples,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    max_frame_size=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
)
def test_tuple_any_chunking_gives_the_events_of_the_whole(
    data: bytes, terms: tuple[bytes, ...], cuts: list[int], max_frame_size: int | None
) -> None:
    whole = run_chunks([data], [terms], max_frame_size=max_frame_size)
    assert run_chunks(split(data, cuts), [terms], max_frame_size=max_frame_size) == whole
    one_by_one = [data[i : i + 1] for i in range(len(data))]
    assert run_chunks(one_by_one, [terms], max_frame_size=max_frame_size) == whole
    assert whole == model_any_of(data, terms, max_frame_size)


@settings(max_examples=200, deadline=None)
@given(
    data=payloads,
    terms=tuples,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_tuple_remainder_after_a_drain_is_only_a_terminator_prefix(
    data: bytes, terms: tuple[bytes, ...], cuts: list[int]
) -> None:
    buf = TerminatorBuffer(terms, max_frame_size=None)
    for chunk in split(data, cuts):
        buf.feed(chunk)
        while buf.next_event() is not NEED_DATA:
            pass
        assert buf.buffered <= max(map(len, terms)) - 1


def test_tuple_reads_both_line_endings_and_tells_which_matched() -> None:
    buf = TerminatorBuffer((b"\r\n", b"\n"))
    buf.feed(b"GET a\r\nGET b\nGET c\r")
    assert buf.next_event() == b"GET a"
    assert buf.next_event() == TerminatorFound(b"\r\n")
    assert buf.next_event() == b"GET b"
    assert buf.next_event() == TerminatorFound(b"\n")
    assert buf.next_event() == b"GET c"
    assert buf.next_event() is NEED_DATA  # b"\r" is held back: it may start b"\r\n"
    assert buf.buffered == 1
    buf.feed(b"\n")
    assert buf.next_event() == TerminatorFound(b"\r\n")
    assert buf.get_terminator() == (b"\r\n", b"\n")


def test_tuple_waits_while_an_earlier_or_longer_match_may_complete() -> None:
    # b"b" is found, but b"abc" would start earlier: wait for the next byte.
    buf = TerminatorBuffer((b"abc", b"b"))
    buf.feed(b"xab")
    assert buf.next_event() == b"x"
    assert buf.next_event() is NEED_DATA
    buf.feed(b"c")
    assert buf.next_event() == TerminatorFound(b"abc")
    # b"\n" is found, but b"\n\n" starts at the same place and is longer.
    buf = TerminatorBuffer((b"\n", b"\n\n"))
    buf.feed(b"x\n")
    assert buf.next_event() == b"x"
    assert buf.next_event() is NEED_DATA
    buf.feed_eof()
    assert buf.next_event() == TerminatorFound(b"\n")
    assert buf.next_event() is END_OF_INPUT


class CountingBytes(bytes):
    """bytes that count how many bytes ``find`` was asked to scan."""

    scanned = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        start = 0 if start is None else start
        end = len(self) if end is None else min(end, len(self))
        idx = super().find(sub, start, end)
        # A search reads up to the end of the occurrence it finds, or to the end of its range.
        CountingBytes.scanned += max(0, (end if idx < 0 else idx + len(sub)) - start)
        return idx


def test_tuple_search_is_linear_when_one_terminator_never_occurs() -> None:
    # Without remembering how far each terminator was searched, b"\r\n" would be searched to the
    # end of the read once per line: quadratic in the lines per read.
    lines = 2000
    data = b"0123456789abcdef\n" * lines
    buf = TerminatorBuffer((b"\r\n", b"\n"), max_frame_size=None)
    buf.feed(data)
    buf._data = CountingBytes(buf._data)  # white box: count the scanning
    CountingBytes.scanned = 0
    found = 0
    while (event := buf.next_event()) is not NEED_DATA:
        found += isinstance(event, TerminatorFound)
    assert found == lines
    assert CountingBytes.scanned <= 3 * len(data)


def test_tuple_terminators_are_validated_with_a_fix() -> None:
    buf = TerminatorBuffer()
    with pytest.raises(TypeError, match=r"not 'list' \(pass a tuple: \(b'\\r\\n', b'\\n'\)\)"):
        buf.set_terminator([b"\r\n", b"\n"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"at least one bytes terminator, not \(\)"):
        buf.set_terminator(())
    with pytest.raises(ValueError, match=r"cannot contain b''"):
        buf.set_terminator((b"\n", b""))
    with pytest.raises(TypeError, match=r"holds bytes, not 'str' \(encode it: b'\\n'\)"):
        buf.set_terminator((b"\r\n", "\n"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"holds bytes, not 'int'"):
        buf.set_terminator((b"\n", 3))  # type: ignore[arg-type]
    buf.set_terminator((b"\n", bytearray(b"\r\n"), b"\n"))  # type: ignore[arg-type]
    assert buf.get_terminator() == (b"\n", b"\r\n")  # converted, duplicates dropped


def test_tuple_frame_too_long_names_the_tuple() -> None:
    buf = TerminatorBuffer((b"\r\n", b"\n"), max_frame_size=3)
    buf.feed(b"abcdef")
    assert buf.next_event() == b"abc"
    with pytest.raises(FrameTooLongError) as info:
        buf.next_event()
    assert info.value.terminator == (b"\r\n", b"\n")


# ------------------------------------------------------- regex terminators (beyond asynchat)


def model_regex(data: bytes, pattern: re.Pattern[bytes], max_frame_size: int | None) -> list[Norm]:
    """Whole-input reference for a regex terminator: ``pattern.search`` over the window."""
    out: list[Norm] = []
    pos = 0
    while True:
        end = len(data) if max_frame_size is None else min(len(data), pos + 2 * max_frame_size)
        match = pattern.search(data, pos, end)
        frame = data[pos:] if match is None else data[pos : match.start()]
        if max_frame_size is not None and len(frame) > max_frame_size:
            if max_frame_size:
                out.append(("data", frame[:max_frame_size]))
            out.append(("error", max_frame_size))
            return out
        if frame:
            out.append(("data", frame))
        if match is None:
            out.append(("end", None))
            return out
        out.append(("found", match.group()))
        pos = match.end()


# Random patterns over the payload alphabet, with the constructs whose end-of-buffer behaviour is
# hard: greedy, lazy and possessive repeats, alternation, lookaheads, $ and \Z.
_atoms = st.sampled_from([b"a", b"b", b"\\n", b"\\r", b"q", b"[ab]", b"[^a]", b".", b"(?s:.)"])


def _extend(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    quantifiers = [b"?", b"*", b"+", b"{1,3}", b"{2}", b"*?", b"+?", b"??"]
    if sys.version_info >= (3, 11):
        quantifiers += [b"*+", b"?+"]
    return st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(b"".join),
        st.tuples(inner, inner).map(lambda ab: b"(?:" + ab[0] + b"|" + ab[1] + b")"),
        st.tuples(inner, st.sampled_from(quantifiers)).map(
            lambda iq: b"(?:" + iq[0] + b")" + iq[1]
        ),
        inner.map(lambda x: b"(?=" + x + b")"),
        inner.map(lambda x: b"(?!" + x + b")"),
        inner.map(lambda x: b"(?i:" + x + b")"),
    )


def _compile_terminator(source: bytes) -> re.Pattern[bytes] | None:
    try:
        pattern = re.compile(source)
        TerminatorBuffer(pattern)
    except (re.error, ValueError):
        return None  # e.g. it can match the empty string
    return pattern


regexes = (
    st.tuples(
        st.recursive(_atoms, _extend, max_leaves=6),
        st.sampled_from([b"", b"", b"$", b"\\Z"]),
    )
    .map(lambda p: _compile_terminator(p[0] + p[1]))
    .filter(lambda p: p is not None)
)
# Short inputs: random nested repeats can backtrack exponentially in any regex engine.
short_payloads = st.binary(max_size=40).map(lambda b: bytes(b"ab\r\nq"[x % 5] for x in b))


@settings(max_examples=600, deadline=None)
@given(
    data=short_payloads,
    pattern=regexes,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    max_frame_size=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
)
def test_regex_any_chunking_gives_the_events_of_the_whole(
    data: bytes, pattern: re.Pattern[bytes], cuts: list[int], max_frame_size: int | None
) -> None:
    whole = run_chunks([data], [pattern], max_frame_size=max_frame_size)
    assert run_chunks(split(data, cuts), [pattern], max_frame_size=max_frame_size) == whole
    one_by_one = [data[i : i + 1] for i in range(len(data))]
    assert run_chunks(one_by_one, [pattern], max_frame_size=max_frame_size) == whole
    assert whole == model_regex(data, pattern, max_frame_size)


@pytest.mark.parametrize(
    "source",
    [
        rb"\r?\n",
        rb"\n\n+",
        rb"\r\n|\n",
        rb"abc|b",
        rb"a(?:bc)?",
        rb"a$",
        rb"q(?=ab)",
        rb"\n(?![ab])",
    ],
)
def test_regex_every_split_of_a_dense_input_gives_the_events_of_the_whole(source: bytes) -> None:
    pattern = re.compile(source)
    data = b"xab\r\nabc\n\n\nqab\n a\nqa\r\r\nbq\n\n"
    for limit in (None, 3, 20):
        whole = run_chunks([data], [pattern], max_frame_size=limit)
        assert whole == model_regex(data, pattern, limit)
        for a in range(len(data) + 1):
            for b in range(a, len(data) + 1, 3):
                chunks = [data[:a], data[a:b], data[b:]]
                assert run_chunks(chunks, [pattern], max_frame_size=limit) == whole, (a, b)


def test_regex_match_that_cannot_grow_is_reported_at_once() -> None:
    # A line protocol must not wait for the next request to answer this one.
    buf = TerminatorBuffer(re.compile(rb"\r?\n"))
    buf.feed(b"GET a\n")
    assert buf.next_event() == b"GET a"
    assert buf.next_event() == TerminatorFound(b"\n")
    buf.feed(b"GET b\r")
    assert buf.next_event() == b"GET b"
    assert buf.next_event() is NEED_DATA
    buf.feed(b"\n")
    assert buf.next_event() == TerminatorFound(b"\r\n")


def test_regex_greedy_match_at_the_end_waits_for_more_input_or_eof() -> None:
    buf = TerminatorBuffer(re.compile(rb"\n\n+"))
    buf.feed(b"para 1\n\n")
    assert buf.next_event() == b"para 1"
    assert buf.next_event() is NEED_DATA  # more newlines may follow
    buf.feed(b"\n")
    assert buf.next_event() is NEED_DATA
    buf.feed(b"para 2\n\n")
    assert buf.next_event() == TerminatorFound(b"\n\n\n")
    assert buf.next_event() == b"para 2"
    assert buf.next_event() is NEED_DATA
    buf.feed_eof()
    assert buf.next_event() == TerminatorFound(b"\n\n")
    assert buf.next_event() is END_OF_INPUT


def test_regex_earlier_match_that_may_still_complete_wins() -> None:
    buf = TerminatorBuffer(re.compile(rb"abc|b"))
    buf.feed(b"xab")
    assert buf.next_event() == b"x"
    assert buf.next_event() is NEED_DATA
    buf.feed(b"c")
    assert buf.next_event() == TerminatorFound(b"abc")


def test_regex_lookahead_for_folded_header_lines() -> None:
    # RFC 5322 folding: a line break followed by a space or tab continues the header line.
    buf = TerminatorBuffer(re.compile(rb"\r\n(?![ \t])"))
    buf.feed(b"Subject: a\r\n long one\r\n")
    assert buf.next_event() == b"Subject: a\r\n long one"
    assert buf.next_event() is NEED_DATA  # is the next line folded too?
    buf.feed(b"To: b\r\n")
    assert buf.next_event() == TerminatorFound(b"\r\n")
    assert buf.next_event() == b"To: b"


def test_regex_window_is_twice_the_frame_limit() -> None:
    # The terminator may be as long as a frame; beyond that the input is cut, as if it ended.
    buf = TerminatorBuffer(re.compile(rb"\n\n+"), max_frame_size=4)
    buf.feed(b"ab" + b"\n" * 10)
    assert buf.next_event() == b"ab"
    assert buf.next_event() == TerminatorFound(b"\n" * 6)
    buf = TerminatorBuffer(re.compile(rb"\n"), max_frame_size=4)
    buf.feed(b"abcdefgh\n")
    assert buf.next_event() == b"abcd"
    with pytest.raises(FrameTooLongError, match="more than 4 bytes") as info:
        buf.next_event()
    assert info.value.terminator == re.compile(rb"\n")


@settings(max_examples=200, deadline=None)
@given(
    data=payloads,
    source=st.sampled_from([rb"\r?\n", rb"\r\n|\n", rb"a[bq]{1,3}\n", rb"q(?=ab)"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_regex_with_bounded_matches_holds_back_only_their_length(
    data: bytes, source: bytes, cuts: list[int]
) -> None:
    # The linear-time argument for bounded patterns: after a drain at most reach - 1 bytes wait.
    pattern = re.compile(source)
    reach = {rb"\r?\n": 2, rb"\r\n|\n": 2, rb"a[bq]{1,3}\n": 5, rb"q(?=ab)": 3}[source]
    buf = TerminatorBuffer(pattern, max_frame_size=None)
    for chunk in split(data, cuts):
        buf.feed(chunk)
        while buf.next_event() is not NEED_DATA:
            pass
        assert buf.buffered <= reach - 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (rb"^GO\n", r"uses \^ \(it looks at bytes already handed over\)"),
        (rb"\Aend", r"uses \\A"),
        (rb"\bend\b", r"uses \\b"),
        (rb"\Bx", r"uses \\B"),
        (rb"(?<=\r)\n", r"uses a lookbehind"),
        (rb"(\n)\1", r"uses a backreference"),
        (rb"(?:(x)|y)(?(1)a|b)", r"uses a backreference"),
        (rb"\n*", r"can match the empty string"),
        (rb"(?=\n)", r"can match the empty string"),
    ],
)
def test_regex_terminators_that_cannot_stream_are_refused(source: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TerminatorBuffer(re.compile(source))


def test_regex_terminator_must_be_bytes() -> None:
    with pytest.raises(TypeError, match=r"compile it from bytes: re.compile\(b'\\\\r\?\\\\n'\)"):
        TerminatorBuffer().set_terminator(re.compile(r"\r?\n"))  # type: ignore[arg-type]


# --------------------------------------------------------------- all kinds together


any_terminator = st.one_of(terminators, tuples, regexes)


@settings(max_examples=300, deadline=None)
@given(
    data=short_payloads,
    schedule=st.lists(any_terminator, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    max_frame_size=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
)
def test_switching_between_all_kinds_is_chunking_independent(
    data: bytes, schedule: list[Terminator], cuts: list[int], max_frame_size: int | None
) -> None:
    whole = run_chunks([data], schedule, max_frame_size=max_frame_size)
    assert run_chunks(split(data, cuts), schedule, max_frame_size=max_frame_size) == whole


def test_clear_returns_the_dropped_bytes() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"abc\ndef")
    buf.feed(b"ghi")
    assert buf.next_event() == b"abc"
    assert buf.clear() == b"defghi"
    assert buf.clear() == b""
    # The b"\n" was consumed with b"abc": its event is still reported, as asynchat calls
    # found_terminator() after a discard_buffers() in collect_incoming_data().
    assert buf.next_event() == TerminatorFound(b"\n")
    assert buf.next_event() is NEED_DATA


# ------------------------------------------------------------------------ deliver()


def run_deliver(
    chunks: Iterable[bytes],
    schedule: Sequence[Terminator],
    *,
    max_frame_size: int | None = None,
    max_frames: int = 3,
) -> list[Norm]:
    """As run_chunks, but through deliver() and its callbacks."""
    sched = list(schedule)
    buf = TerminatorBuffer(sched.pop(0), max_frame_size=max_frame_size)
    out: list[Norm] = []

    def collect(data: bytes) -> None:
        assert data, "collected data must never be empty"
        if out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + data)
        else:
            out.append(("data", data))

    def found() -> None:
        assert buf.last_found is not None
        out.append(("found", buf.last_found.terminator))
        if sched:
            buf.set_terminator(sched.pop(0))

    def drain() -> bool:
        while True:
            try:
                result = buf.deliver(collect, found, max_frames)
            except FrameTooLongError as exc:
                out.append(("error", exc.limit))
                return False
            if result is NEED_DATA:
                return True
            if result is END_OF_INPUT:
                out.append(("end", None))
                return False
            assert result is None  # a batch of max_frames frames

    for chunk in chunks:
        buf.feed(chunk)
        if not drain():
            return out
    buf.feed_eof()
    drain()
    return out


@settings(max_examples=300, deadline=None)
@given(
    data=payloads,
    schedule=st.lists(terminators, min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    max_frame_size=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
)
def test_deliver_gives_the_events_of_next_event(
    data: bytes, schedule: list[Terminator], cuts: list[int], max_frame_size: int | None
) -> None:
    chunks = split(data, cuts)
    expected = run_chunks(chunks, schedule, max_frame_size=max_frame_size)
    assert run_deliver(chunks, schedule, max_frame_size=max_frame_size) == expected


def test_deliver_returns_a_hooks_result_and_keeps_the_terminator_due() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"ab\ncd\n")
    calls: list[str] = []
    marker = object()

    def collect(data: bytes) -> object:
        calls.append(data.decode())
        return marker if data == b"ab" else None

    def found() -> None:
        calls.append("found")

    assert buf.deliver(collect, found, 100) is marker
    assert calls == ["ab"]
    assert buf.deliver(collect, found, 100) is NEED_DATA
    assert calls == ["ab", "found", "cd", "found"]


def test_deliver_stops_after_max_frames_and_on_interrupt() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"a\nb\nc\nd\n")
    frames: list[bytes] = []

    def found() -> None:
        frames.append(b"")
        if len(frames) == 3:
            buf.interrupt()

    assert buf.deliver(lambda data: None, found, 2) is None
    assert len(frames) == 2
    assert buf.deliver(lambda data: None, found, 2) is None  # interrupted after the third
    assert len(frames) == 3
    assert buf.deliver(lambda data: None, found, 2) is NEED_DATA
    assert len(frames) == 4


# ------------------------------------------------------------------------- linear time


class MeteredBytes(bytes):
    """bytes that meter the work done on them: bytes scanned by ``find`` and copied by slicing.

    A slice that reaches the end is a remainder, not a frame: it stays a MeteredBytes, so a reader
    that re-slices what is left after each frame (asynchat's ``ac_in_buffer =
    ac_in_buffer[index + len(term):]``) is charged for every copy, and for every later search.
    """

    work = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        start = 0 if start is None else start
        end = len(self) if end is None else min(end, len(self))
        idx = super().find(sub, start, end)
        # A search reads up to the end of the occurrence it finds, or to the end of its range.
        MeteredBytes.work += max(0, (end if idx < 0 else idx + len(sub)) - start)
        return idx

    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: SupportsIndex | slice) -> int | bytes:
        if not isinstance(key, slice):
            return super().__getitem__(key)
        piece = super().__getitem__(key)
        MeteredBytes.work += len(piece)
        if key.stop is None or key.stop >= len(self):
            return MeteredBytes(piece)
        return piece


def metered_drain(buf: TerminatorBuffer, how: str, budget: int) -> int:
    """Drain *buf* with next_event() or deliver(); return the frames found.

    Stops early once the metered work exceeds *budget*, so a quadratic reader fails fast.
    """
    frames = 0
    if how == "next_event":
        while MeteredBytes.work <= budget:
            event = buf.next_event()
            if event is NEED_DATA:
                break
            frames += isinstance(event, TerminatorFound)
        return frames

    def found() -> None:
        nonlocal frames
        frames += 1

    # A small max_frames, as AsyncChat uses: deliver() is re-entered after each batch.
    while MeteredBytes.work <= budget and buf.deliver(lambda data: None, found, 64) is None:
        pass
    return frames


@pytest.mark.parametrize("how", ["next_event", "deliver"])
@pytest.mark.parametrize("max_frame_size", [None, DEFAULT_MAX_FRAME_SIZE])
@pytest.mark.parametrize("lines", [1000, 4000, 16000])
def test_many_frames_in_one_read_take_linear_work(
    how: str, max_frame_size: int | None, lines: int
) -> None:
    # The core path: a bytes terminator, many frames in one read. Each byte is searched once and
    # copied once (into its frame), so the work per byte stays the same however many frames the
    # read holds. Re-slicing the remainder after each frame, as asynchat does, copies
    # lines * len(data) / 2 bytes in all: 136 MB for 4,000 lines (68 KB).
    data = b"0123456789abcdef\n" * lines
    buf = TerminatorBuffer(b"\n", max_frame_size=max_frame_size)
    buf.feed(data)
    buf._data = MeteredBytes(buf._data)  # white box: meter the work on the buffered bytes
    MeteredBytes.work = 0
    budget = 3 * len(data)
    frames = metered_drain(buf, how, budget)
    assert MeteredBytes.work <= budget, f"over 3 units of work per byte after {frames} frames"
    assert MeteredBytes.work >= len(data)  # every byte was searched: the meter ran
    assert frames == lines
    assert buf.next_event() is NEED_DATA

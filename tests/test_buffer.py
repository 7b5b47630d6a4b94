"""Tests of the sans-IO TerminatorBuffer: direct, exhaustive, property-based and differential."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import (
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


def model(data: bytes, schedule: Sequence[Terminator], max_frame_size: int | None) -> list[Norm]:
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
    data: bytes, schedule: list[Terminator], cuts: list[int], max_frame_size: int | None
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

    def __init__(self, chunks: list[bytes], schedule: list[Terminator]) -> None:
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
    data: bytes, schedule: list[Terminator], cuts: list[int]
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

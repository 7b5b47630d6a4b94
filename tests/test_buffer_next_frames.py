"""Tests of ``TerminatorBuffer.next_frames``: the same frames as ``next_event`` in a loop, for
every terminator kind, limit, chunking and ``max_frames`` (sans-IO, no trio)."""

from __future__ import annotations

import itertools
import re

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
)

#: The frames with the terminator that ended each (None: not known), then how the input ended:
#: ("end", the data of an unfinished frame) or ("too long", the data handed over before it).
Result = tuple[list[tuple[bytes, bytes | int | None]], tuple[str, bytes]]


def by_events(chunks: list[bytes], term: Terminator, limit: int | None) -> Result:
    """The reference: next_event, one event at a time."""
    buf = TerminatorBuffer(term, max_frame_size=limit)
    frames: list[tuple[bytes, bytes | int | None]] = []
    pieces: list[bytes] = []
    for chunk in [*chunks, None]:
        if chunk is None:
            buf.feed_eof()
        else:
            buf.feed(chunk)
        while True:
            try:
                event = buf.next_event()
            except FrameTooLongError:
                return frames, ("too long", b"".join(pieces))
            if isinstance(event, bytes):
                pieces.append(event)
            elif isinstance(event, TerminatorFound):
                frames.append((b"".join(pieces), event.terminator))
                pieces.clear()
            elif event is NEED_DATA:
                break
            else:
                return frames, ("end", b"".join(pieces))
    raise AssertionError("no END_OF_INPUT after feed_eof()")


def by_batches(
    chunks: list[bytes], term: Terminator, limit: int | None, max_frames: int | None
) -> Result:
    """next_frames after every feed, until it returns no frame."""
    buf = TerminatorBuffer(term, max_frame_size=limit)
    frames: list[tuple[bytes, bytes | int | None]] = []
    pieces: list[bytes] = []
    for chunk in [*chunks, None]:
        if chunk is None:
            buf.feed_eof()
        else:
            buf.feed(chunk)
        while True:
            try:
                batch, last = buf.next_frames(pieces, max_frames)
            except FrameTooLongError:
                return frames, ("too long", b"".join(pieces))
            if batch:
                assert len(batch) <= (max_frames or len(batch))
                assert isinstance(last, TerminatorFound)
                frames += [(frame, None) for frame in batch[:-1]]
                frames.append((batch[-1], last.terminator))
                continue
            if last is NEED_DATA:
                break
            assert last is END_OF_INPUT
            return frames, ("end", b"".join(pieces))
    raise AssertionError("no END_OF_INPUT after feed_eof()")


def same(reference: Result, other: Result) -> None:
    assert [f for f, _ in other[0]] == [f for f, _ in reference[0]]
    for (_, expected), (_, seen) in zip(reference[0], other[0], strict=True):
        assert seen is None or seen == expected
    assert other[1] == reference[1]


TERMINATORS: list[Terminator] = [
    b"\n",
    b"\r\n",
    b"aba",
    (b"\r\n", b"\n"),
    (b"ab", b"b"),
    re.compile(rb"\r?\n"),
    re.compile(rb"b+\n"),
    3,
    None,
]


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=80).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
    term=st.sampled_from(TERMINATORS),
    limit=st.sampled_from([None, 0, 1, 2, 5, 9]),
    max_frames=st.sampled_from([None, 1, 2, 3, 7]),
)
def test_next_frames_gives_the_frames_of_next_event_for_any_chunking(
    data: bytes,
    cuts: list[int],
    term: Terminator,
    limit: int | None,
    max_frames: int | None,
) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    reference = by_events([data], term, limit)
    same(reference, by_events(chunks, term, limit))
    same(reference, by_batches(chunks, term, limit, max_frames))


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=1200), max_size=8),
    tail=st.integers(min_value=0, max_value=700),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    term=st.sampled_from([b"\n", b"\r\n", b"aab"]),
    limit=st.sampled_from([None, 0, 500, 512, 513, 1000]),
    max_frames=st.sampled_from([None, 1, 3]),
)
def test_next_frames_with_long_frames_gives_the_frames_of_next_event(
    lengths: list[int],
    tail: int,
    cuts: list[int],
    term: bytes,
    limit: int | None,
    max_frames: int | None,
) -> None:
    # Frames around 512 bytes, where the bytes fast path switches from split to find; the
    # filler "a" makes a prefix of b"aab" at every position.
    data = term.join(b"a" * n for n in [*lengths, tail])
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    reference = by_events([data], term, limit)
    same(reference, by_events(chunks, term, limit))
    same(reference, by_batches(chunks, term, limit, max_frames))


def test_every_complete_frame_at_once_and_the_rest_in_pieces() -> None:
    buf = TerminatorBuffer(b"\r\n")
    buf.feed(b"a\r\nbb\r\n\r\ncc\r")
    pieces: list[bytes] = []
    assert buf.next_frames(pieces) == ([b"a", b"bb", b""], TerminatorFound(b"\r\n"))
    assert buf.next_frames(pieces) == ([], NEED_DATA)
    assert pieces == [b"cc"]  # the b"\r" is held back: it may start the terminator
    buf.feed(b"\ndd\r\ne")
    assert buf.next_frames(pieces) == ([b"cc", b"dd"], TerminatorFound(b"\r\n"))
    assert pieces == [b"e"]
    buf.feed_eof()
    assert buf.next_frames(pieces) == ([], END_OF_INPUT)
    assert pieces == [b"e"]  # the unfinished frame, for the caller to report


def test_max_frames_leaves_the_rest_in_the_buffer() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"1\n2\n3\n4")
    pieces: list[bytes] = []
    assert buf.next_frames(pieces, 2) == ([b"1", b"2"], TerminatorFound(b"\n"))
    assert (buf.buffered, pieces) == (3, [])
    assert buf.next_frames(pieces, 1)[0] == [b"3"]
    assert buf.next_event() == b"4"  # the other methods go on from there
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"max_frames must be >= 1 .*not {bad}"):
            buf.next_frames(pieces, bad)


def test_frame_too_long_is_raised_after_the_frames_before_it() -> None:
    buf = TerminatorBuffer(b"\n", max_frame_size=3)
    buf.feed(b"ab\ncdefg\nh\n")
    pieces: list[bytes] = []
    assert buf.next_frames(pieces) == ([b"ab"], TerminatorFound(b"\n"))
    assert pieces == [b"cde"]  # handed over up to the limit, as next_event does
    with pytest.raises(FrameTooLongError, match="more than 3 bytes"):
        buf.next_frames(pieces)
    with pytest.raises(FrameTooLongError):  # sticky, as next_event
        buf.next_frames(pieces)
    assert buf.clear() == b"fg\nh\n"


def test_frames_of_exactly_the_limit_are_accepted() -> None:
    for max_frames in (None, 1):
        buf = TerminatorBuffer(b"\n", max_frame_size=3)
        buf.feed(b"abc\n\nxyz\n")
        pieces: list[bytes] = []
        frames: list[bytes] = []
        while batch := buf.next_frames(pieces, max_frames)[0]:
            frames += batch
        assert frames == [b"abc", b"", b"xyz"]


def test_pieces_handed_over_before_are_joined_to_the_first_frame() -> None:
    buf = TerminatorBuffer(b"\n")
    buf.feed(b"abc")
    first = buf.next_event()
    assert first == b"abc"
    pieces = [first]
    buf.feed(b"def\nghi\n")
    assert buf.next_frames(pieces) == ([b"abcdef", b"ghi"], TerminatorFound(b"\n"))
    assert pieces == []


def test_other_terminators_loop_over_next_event() -> None:
    buf = TerminatorBuffer((b"\r\n", b"\n"))
    buf.feed(b"a\r\nb\nc")
    pieces: list[bytes] = []
    assert buf.next_frames(pieces) == ([b"a", b"b"], TerminatorFound(b"\n"))
    buf.set_terminator(re.compile(rb";+"))
    buf.feed(b";;d;")
    assert buf.next_frames(pieces) == ([b"c"], TerminatorFound(b";;"))
    assert buf.next_frames(pieces) == ([], NEED_DATA)  # b";" may still grow
    assert pieces == [b"d"]
    pieces.clear()
    buf.set_terminator(2)
    buf.feed(b"x")
    assert buf.next_frames(pieces) == ([b";x"], TerminatorFound(2))
    buf.feed(b"xyz")  # a satisfied count acts as None: everything is data
    assert buf.next_frames(pieces) == ([], NEED_DATA)
    assert pieces == [b"xyz"]

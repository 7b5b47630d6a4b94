"""Producers: what ``push_with_producer`` accepts, and asynchat's ``simple_producer``.

A producer is pulled by the send loop only after the previous write finished, so it runs only as
fast as the peer reads ("choose data late"). This module knows nothing of trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = ["Producer", "ProducerLike", "simple_producer"]


@runtime_checkable
class Producer(Protocol):
    """asynchat's producer protocol: ``more()`` returns the next bytes, ``b""`` when exhausted."""

    def more(self) -> bytes: ...


#: The bytes-like objects ``push`` accepts.
# Runtime aliases, not strings: user code annotated with them must work with get_type_hints().
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Everything ``push_with_producer`` accepts.
ProducerLike: TypeAlias = Producer | BytesLike | Iterable[BytesLike] | AsyncIterable[BytesLike]


class simple_producer:  # noqa: N801 - asynchat's name, kept for drop-in parity
    """Hands out *data* in pieces of at most *buffer_size* bytes (asynchat parity).

    Args:
        data: the bytes to produce.
        buffer_size: the most bytes one ``more()`` call returns.
    """

    def __init__(self, data: bytes, buffer_size: int = 512) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, not {buffer_size}")
        # A memoryview makes each piece one copy, where asynchat re-sliced the remainder per call.
        self._view = memoryview(bytes(data))
        self._pos = 0
        self.buffer_size = buffer_size

    @property
    def data(self) -> bytes:
        """The bytes not produced yet."""
        return bytes(self._view[self._pos :])

    def more(self) -> bytes:
        """Return the next piece, or ``b""`` when everything was produced."""
        pos = self._pos
        self._pos = min(pos + self.buffer_size, len(self._view))
        return bytes(self._view[pos : self._pos])


def as_bytes(data: object, what: str) -> bytes:
    """Return *data* as immutable bytes (a snapshot), or raise a TypeError naming *what*."""
    if data.__class__ is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    hint = " (encode it first, e.g. s.encode())" if isinstance(data, str) else ""
    raise TypeError(
        f"{what} must be bytes, bytearray or memoryview, not {type(data).__name__!r}{hint}"
    )

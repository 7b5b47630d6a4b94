"""What the sans-IO buffer hands out: its events, and what it accepts as a terminator.

This module never imports trio.
"""

from __future__ import annotations

import enum
import re
from typing import Final, TypeAlias

import attrs

__all__ = ["END_OF_INPUT", "NEED_DATA", "BufferEvent", "Event", "Signal", "Terminator"]

#: What ``set_terminator`` accepts: bytes (search for them), a tuple of bytes (search for any of
#: them), a compiled bytes regular expression (search for a match), an int (count that many bytes)
#: or None (hand over everything). ``b""`` and ``0`` act as None.
Terminator: TypeAlias = bytes | tuple[bytes, ...] | re.Pattern[bytes] | int | None


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
Event: TypeAlias = bytes | TerminatorFound | Signal

#: The same as :data:`Event`, under a name that cannot be mistaken for :class:`trio.Event`.
BufferEvent: TypeAlias = Event

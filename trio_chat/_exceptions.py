"""Exceptions raised by trio_chat; each one carries the facts and says how to fix the problem."""

from __future__ import annotations

__all__ = ["FrameTooLongError", "IncompleteFrameError"]


class FrameTooLongError(Exception):
    """More than ``max_frame_size`` bytes arrived without the terminator.

    Attributes:
        limit: the ``max_frame_size`` that was exceeded.
        terminator: the terminator that was being searched for.
    """

    def __init__(self, limit: int, terminator: object) -> None:
        self.limit = limit
        self.terminator = terminator
        super().__init__(
            f"more than {limit} bytes arrived without the terminator {terminator!r}; "
            "raise max_frame_size (or pass None to disable the limit) if such frames are legitimate"
        )


class IncompleteFrameError(Exception):
    """The input ended in the middle of a frame.

    Attributes:
        partial: the bytes of the incomplete frame that did arrive.
        terminator: the terminator (bytes, or the number of bytes wanted) that never came.
    """

    def __init__(self, partial: bytes, terminator: object) -> None:
        self.partial = partial
        self.terminator = terminator
        super().__init__(
            f"the stream ended after {len(partial)} bytes of an incomplete frame "
            f"(waiting for {terminator!r}); the bytes that did arrive are in .partial"
        )

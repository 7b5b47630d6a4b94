"""Log lines that a flood of peers would multiply, summarised at most once per second per reason.

A peer that opens thousands of connections a second must not make the server write thousands of
lines a second: the first line of each reason is logged at once, the ones that follow within
the next second are counted, and when that second is over one line says how many there were and
repeats the last of them.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import attrs
import trio

__all__ = ["SUMMARY_INTERVAL", "ThrottledLog"]

# One line per reason per second: few enough that a flood of any size writes a bounded log (a
# handful of reasons, so a handful of lines a second), often enough that an operator watching
# the log sees the attack while it happens.
SUMMARY_INTERVAL: Final = 1.0


@attrs.define(eq=False)
class _Window:
    """The second after a reason was last logged: what came since, not logged yet."""

    ends: float
    level: int = logging.NOTSET
    count: int = 0
    last: str = ""


class ThrottledLog:
    """A logger's lines, at most one per reason per *interval* seconds, and a summary after.

    :meth:`run` must run in a task (the server's nursery) for the summaries to come out while no
    new line arrives; :meth:`flush` writes what is pending (at the end).
    """

    def __init__(self, logger: logging.Logger, interval: float = SUMMARY_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._windows: dict[str, _Window] = {}
        self._wakeup = trio.Event()  # set when a window opens, for run()

    def log(self, reason: str, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` at *level*, unless *reason* was logged (or summarised) less
        than a second ago: then count it for the next summary."""
        if not self.logger.isEnabledFor(level):
            return
        now = trio.current_time()
        window = self._windows.get(reason)
        if window is not None and now >= window.ends:
            window = self._close(reason, window, now)
        if window is not None:
            window.count += 1
            window.level = max(window.level, level)
            window.last = message % args if args else message
            return
        self.logger.log(level, message, *args)
        self._open(reason, now)

    def flush(self, *, everything: bool = True) -> None:
        """Write the summary of every window that has ended (with *everything*: of all)."""
        now = trio.current_time()
        for reason, window in list(self._windows.items()):
            if everything:
                del self._windows[reason]
                self._summarise(reason, window)
            elif now >= window.ends:
                self._close(reason, window, now)

    def _open(self, reason: str, now: float) -> _Window:
        window = self._windows[reason] = _Window(now + self.interval)
        self._wakeup.set()
        return window

    def _close(self, reason: str, window: _Window, now: float) -> _Window | None:
        """End *window*: a summary if lines were held back, which opens the next window (so
        a flood gets one line a second); else nothing, and the next line is logged at once."""
        del self._windows[reason]
        if not window.count:
            return None
        self._summarise(reason, window)
        return self._open(reason, now)

    async def run(self) -> NoReturn:
        """Write each summary when its second is over; never returns (cancel it)."""
        while True:
            if not self._windows:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            await trio.sleep_until(min(window.ends for window in self._windows.values()))
            self.flush(everything=False)

    def _summarise(self, reason: str, window: _Window) -> None:
        if window.count:
            self.logger.log(
                window.level,
                "... and %d more like it (%s) in %s s; the last: %s",
                window.count,
                reason,
                self.interval,
                window.last,
            )

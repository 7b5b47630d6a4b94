"""trio_chat/_serve_log.py: lines a flood would multiply come out once a second per reason."""

from __future__ import annotations

import logging

import trio
import trio.testing
from serving_helpers import capture_logs

from trio_chat._serve_log import ThrottledLog


def messages(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records]


async def test_the_first_line_at_once_then_one_summary_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with capture_logs("test.flood") as records, trio.fail_after(100):
        log = ThrottledLog(logging.getLogger("test.flood"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.run)
            for n in range(250):  # 2.5 seconds of refusals, 100 a second
                log.log("refused", logging.WARNING, "refusing %s", n)
                await trio.sleep(0.01)
            await trio.sleep(5)  # the summaries of what is left come out by themselves
            nursery.cancel_scope.cancel()
    lines = messages(records)
    assert lines[0] == "refusing 0"
    assert lines[1:] == [
        "... and 99 more like it (refused) in 1.0 s; the last: refusing 99",
        "... and 100 more like it (refused) in 1.0 s; the last: refusing 199",
        "... and 50 more like it (refused) in 1.0 s; the last: refusing 249",
    ]
    assert all(record.levelno == logging.WARNING for record in records)


async def test_each_reason_has_its_own_second_and_a_quiet_reason_logs_at_once_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with capture_logs("test.reasons") as records, trio.fail_after(100):
        log = ThrottledLog(logging.getLogger("test.reasons"))
        log.log("a", logging.INFO, "a1")
        log.log("b", logging.INFO, "b1")  # another reason: not held back by a
        log.log("a", logging.INFO, "a2")  # held back
        await trio.sleep(1.5)
        log.log("a", logging.INFO, "a3")  # a's second is over: a2's summary, and a3 held
        await trio.sleep(1.5)
        log.log("b", logging.INFO, "b2")  # b was quiet for a second: logged at once
        log.flush()  # at the end: what is held back comes out
    assert messages(records) == [
        "a1",
        "b1",
        "... and 1 more like it (a) in 1.0 s; the last: a2",
        "b2",
        "... and 1 more like it (a) in 1.0 s; the last: a3",  # by flush(): no run() here
    ]


def test_a_level_that_is_not_logged_costs_nothing() -> None:
    logger = logging.getLogger("test.quiet")
    logger.setLevel(logging.WARNING)
    log = ThrottledLog(logger)
    log.log("r", logging.DEBUG, "never %s", "formatted")  # no trio needed: returns at once
    assert log._windows == {}

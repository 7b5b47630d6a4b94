"""A program for tests/test_workers.py: N worker processes on one port, via run_workers().

    python tests/workers_app.py --port PORT --workers N [--crash-at-start] [--slow-stop]

Each worker answers every line with ``<worker number> <pid> <line>``, and prints
``worker N listening (pid P)`` once it accepts. ``--crash-at-start``: every worker raises at
once (a crash loop). ``--slow-stop``: workers ignore their shutdown event (so the supervisor's
stop timeout must kill them).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial

import trio

from trio_chat import (
    AsyncChat,
    Worker,
    WorkerCrashError,
    open_tcp_listeners_reuseport,
    run_workers,
    serve_listeners,
)


class WhoAmI(AsyncChat):
    """Answers each line with the worker's number and pid."""

    def __init__(self, stream: trio.abc.Stream, number: int) -> None:
        super().__init__(stream)
        self.set_terminator(b"\n")
        self.number = number
        self.pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        self.push(b"%d %d %s\n" % (self.number, os.getpid(), line))


async def worker_main(port: int, crash_at_start: bool, slow_stop: bool, worker: Worker) -> None:
    if crash_at_start:
        raise RuntimeError(f"worker {worker.number} cannot start (as asked)")
    listeners = await open_tcp_listeners_reuseport(port, host="127.0.0.1")
    shutdown = trio.Event() if slow_stop else worker.shutdown_event
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners,
                partial(WhoAmI, number=worker.number),
                listeners,
                shutdown_event=shutdown,
                grace_period=1.0,
            )
        )
        say(f"worker {worker.number} listening (pid {os.getpid()})")
    say(f"worker {worker.number} stopped")


def say(line: str) -> None:
    # One write per line: the workers share standard output, and print() may write the text
    # and the newline separately, which another worker's line can then come between.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crash-at-start", action="store_true")
    parser.add_argument("--slow-stop", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s: %(message)s")
    print(f"supervisor pid {os.getpid()}", flush=True)
    try:
        run_workers(
            partial(worker_main, args.port, args.crash_at_start, args.slow_stop),
            args.workers,
            stop_timeout=2.0,
            max_restarts=3,
        )
    except WorkerCrashError as exc:
        print(f"gave up: {exc}", file=sys.stderr, flush=True)
        return 1
    print("all workers stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

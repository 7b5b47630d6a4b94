"""Worker processes: one server on every core, all on one port.

trio runs one thread per process, so one server process uses one core. :func:`run_workers`
starts N processes that each run your ``main(worker)``; each listens on the same port with
:func:`open_tcp_listeners_reuseport` (or ``serve_tcp(..., reuse_port=True)``), and the kernel
spreads the connections over them. The process that called :func:`run_workers` becomes the
supervisor: it serves nothing itself, turns SIGINT/SIGTERM into a graceful shutdown of every
worker, and replaces a worker that crashed, a bounded number of times.

Task layout of the supervisor (one trio task per worker, each waiting on its process)::

    run_workers()                 trio.run in the calling process
    ├── signals                   SIGINT/SIGTERM: SIGTERM to every worker; a 2nd one: SIGKILL
    ├── stop deadline             after a stop: SIGKILL whatever is left after stop_timeout
    └── workers                   a nursery
        └── worker N              start the process, wait for it to end; a crash: report,
                                  wait a little, start it again (at most max_restarts per
                                  restart_window seconds)

and of a worker (a fresh interpreter: multiprocessing's "spawn")::

    trio.run in the worker process
    ├── stop watcher              SIGINT/SIGTERM, or the supervisor gone: set shutdown_event
    │                             (orphaned and still running stop_timeout later: exit)
    └── your main(worker)         serve with shutdown_event=worker.shutdown_event, return
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import attrs
import trio

from ._reuseport import check_reuseport_supported
from ._serve import DEFAULT_GRACE_PERIOD

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_RESTART_WINDOW",
    "DEFAULT_STOP_TIMEOUT",
    "Worker",
    "WorkerCrashError",
    "run_workers",
]

logger: Final = logging.getLogger("trio_chat")

# 5 crashes within 60 seconds: systemd's default start limit (StartLimitBurst=5 within
# StartLimitIntervalSec=10 s), over a longer window because a worker that crashes at start-up
# (a bad config, a port held by another program) takes a second or so to fail, not a few ms.
# Past it the fault is not transient: the supervisor stops the rest and reports it.
DEFAULT_MAX_RESTARTS: Final = 5
DEFAULT_RESTART_WINDOW: Final = 60.0

# What a stopping worker gets before SIGKILL: the serving layer's default grace period, plus
# 5 seconds for what follows it (cancelling the connections left, closing them, a backend's
# last writes). A worker whose serve_* uses a longer grace_period needs a longer stop_timeout.
DEFAULT_STOP_TIMEOUT: Final = DEFAULT_GRACE_PERIOD + 5.0

# Between a crash and the replacement: 0.1 s doubled per recent restart (0.1, 0.2, ... 1.6 s
# for the default 5), so a crash loop does not spin a core while it uses up its budget.
_FIRST_RESTART_DELAY: Final = 0.1

#: A worker's main function: called with its :class:`Worker` in the worker process.
WorkerMain = Callable[["Worker"], Awaitable[object]]


@attrs.frozen
class Worker:
    """What ``main`` gets in each worker process.

    Attributes:
        number: 0 to ``workers - 1``; a replacement keeps the number of the worker it replaces.
        workers: how many workers run.
        shutdown_event: set when the worker should stop: the supervisor sent SIGTERM (or the
            terminal SIGINT), or the supervisor is gone. Pass it to
            :func:`serve_tcp`/:func:`serve_listeners` as ``shutdown_event``, and return once
            they have.
    """

    number: int
    workers: int
    shutdown_event: trio.Event


class WorkerCrashError(RuntimeError):
    """Workers kept crashing: more than ``max_restarts`` within ``restart_window`` seconds.

    Attributes:
        number: the worker whose crash used up the budget.
        exitcode: its exit code (negative: killed by that signal).
    """

    def __init__(self, number: int, exitcode: int, max_restarts: int, window: float) -> None:
        super().__init__(
            f"worker {number} exited with {_describe(exitcode)}, and workers crashed "
            f"{max_restarts} times within {window:g} seconds already: not restarting it; the "
            "other workers were stopped (see the workers' error output for why they crashed)"
        )
        self.number = number
        self.exitcode = exitcode


def run_workers(
    main: WorkerMain,
    workers: int,
    *,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    restart_window: float = DEFAULT_RESTART_WINDOW,
) -> None:
    """Run ``main(worker)`` in *workers* processes until SIGINT/SIGTERM; replace crashed ones.

    Call it instead of :func:`trio.run`, from the ``if __name__ == "__main__":`` block of your
    program. Each worker is a fresh interpreter (multiprocessing's "spawn" start method), so
    *main* must be picklable: a module-level ``async def`` or a :func:`functools.partial` of
    one, with picklable arguments. It listens on its own (usually
    ``serve_tcp(..., reuse_port=True, shutdown_event=worker.shutdown_event)``) and returns
    after a graceful shutdown. Workers log like the supervisor: if the root logger has a
    handler when this is called, each worker gets :func:`logging.basicConfig` with the same
    level and format.

    * SIGINT or SIGTERM (to the supervisor) stops every worker: each gets SIGTERM, which sets
      its ``shutdown_event``; one still running *stop_timeout* seconds later is killed
      (SIGKILL). A second SIGINT/SIGTERM kills them at once.
    * A worker that exits with status 0 by itself has finished and is not replaced.
    * A worker that crashes (an exception out of *main*: status 1, or killed by a signal) is
      logged on the ``trio_chat`` logger and replaced, with the same number, after a short
      delay. Its traceback, if any, is on its standard error.
    * More than *max_restarts* crashes within *restart_window* seconds: the other workers are
      stopped as above and :exc:`WorkerCrashError` is raised.
    * A worker whose supervisor is gone (killed with SIGKILL, say) sets its own
      ``shutdown_event``, and exits if it is still running *stop_timeout* seconds later.

    Args:
        main: the async function each worker runs, given its :class:`Worker`.
        workers: how many worker processes (usually one per core: :func:`os.cpu_count`).
        stop_timeout: seconds a stopping worker gets before SIGKILL (default: 10, the serving
            layer's default grace period plus 5).
        max_restarts: crashes tolerated within *restart_window* (default 5).
        restart_window: seconds (default 60).

    Returns:
        When every worker has ended after a stop, or finished by itself.

    Raises:
        NotImplementedError: the platform cannot share a port between processes (see
            :func:`open_tcp_listeners_reuseport`).
        TypeError, ValueError: an argument has the wrong type or value.
        WorkerCrashError: workers crashed more than *max_restarts* times within
            *restart_window* seconds.
    """
    check_reuseport_supported()
    if not callable(main):
        raise TypeError(f"main must be an async function, not {type(main).__name__!r}")
    for name, value in (("workers", workers), ("max_restarts", max_restarts)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__!r}")
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers!r}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be 0 or more, not {max_restarts!r}")
    for name, seconds in (("stop_timeout", stop_timeout), ("restart_window", restart_window)):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {type(seconds).__name__!r}")
        if not seconds > 0:
            raise ValueError(f"{name} must be more than 0 seconds, not {seconds!r}")
    supervisor = _Supervisor(
        main=main,
        workers=workers,
        stop_timeout=stop_timeout,
        max_restarts=max_restarts,
        restart_window=restart_window,
        logging_setup=_logging_setup(),
    )
    trio.run(supervisor.run)
    if supervisor.failure is not None:
        raise supervisor.failure


@attrs.define(eq=False, kw_only=True)
class _Supervisor:
    """The state of one run_workers() call."""

    main: WorkerMain
    workers: int
    stop_timeout: float
    max_restarts: int
    restart_window: float
    logging_setup: tuple[int, str | None] | None
    context: multiprocessing.context.SpawnContext = attrs.field(
        factory=lambda: multiprocessing.get_context("spawn")
    )
    # The running process of each worker number.
    processes: dict[int, multiprocessing.process.BaseProcess] = attrs.field(factory=dict)
    # When each crash within the last restart_window seconds happened (trio.current_time()).
    crashes: collections.deque[float] = attrs.field(factory=collections.deque)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    failure: WorkerCrashError | None = None

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as supervisor:
                supervisor.start_soon(self.watch_signals, signals, supervisor)
                async with trio.open_nursery() as workers:
                    for number in range(self.workers):
                        workers.start_soon(
                            self.keep_running, number, supervisor, name=f"worker {number}"
                        )
                supervisor.cancel_scope.cancel()

    async def watch_signals(self, signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self.stopping.is_set():
                logger.info("%s: stopping %d worker(s)", name, len(self.processes))
                self.stop(nursery)
            else:
                logger.warning("%s again: killing %d worker(s)", name, len(self.processes))
                self.kill_all()

    def stop(self, nursery: trio.Nursery) -> None:
        """SIGTERM to every worker (their graceful shutdown), SIGKILL after stop_timeout."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for process in self.processes.values():
            _signal(process, signal.SIGTERM)
        nursery.start_soon(self.kill_after_stop_timeout)

    async def kill_after_stop_timeout(self) -> None:
        await trio.sleep(self.stop_timeout)
        if self.processes:
            logger.warning(
                "%d worker(s) still running %g seconds after SIGTERM: killing them",
                len(self.processes),
                self.stop_timeout,
            )
            self.kill_all()

    def kill_all(self) -> None:
        for process in self.processes.values():
            _signal(process, signal.SIGKILL)

    async def keep_running(self, number: int, nursery: trio.Nursery) -> None:
        """Run worker *number*; replace it after a crash, while the restart budget lasts."""
        while not self.stopping.is_set():
            exitcode = await self.run_once(number)
            if self.stopping.is_set():
                return
            if exitcode == 0:
                logger.info("worker %d finished", number)
                return
            now = trio.current_time()
            while self.crashes and self.crashes[0] <= now - self.restart_window:
                self.crashes.popleft()
            if len(self.crashes) >= self.max_restarts:
                logger.error(
                    "worker %d exited with %s; %d restarts within %g seconds already: "
                    "stopping the other workers",
                    number,
                    _describe(exitcode),
                    len(self.crashes),
                    self.restart_window,
                )
                self.failure = WorkerCrashError(
                    number, exitcode, self.max_restarts, self.restart_window
                )
                self.stop(nursery)
                return
            self.crashes.append(now)
            delay = _FIRST_RESTART_DELAY * 2 ** (len(self.crashes) - 1)
            logger.error(
                "worker %d exited with %s; restarting it in %g seconds (restart %d of at most "
                "%d within %g seconds)",
                number,
                _describe(exitcode),
                delay,
                len(self.crashes),
                self.max_restarts,
                self.restart_window,
            )
            with trio.move_on_after(delay):
                await self.stopping.wait()

    async def run_once(self, number: int) -> int:
        """Start worker *number*'s process and wait for it to end; its exit code."""
        process = self.context.Process(
            target=_worker_process,
            args=(self.main, number, self.workers, self.stop_timeout, self.logging_setup),
            name=f"trio_chat worker {number}",
        )
        process.start()  # a fork and exec, then the pickled arguments down a pipe: quick
        self.processes[number] = process
        logger.info("worker %d started (pid %s)", number, process.pid)
        try:
            # The sentinel is a file descriptor that becomes readable when the process ends.
            await trio.lowlevel.wait_readable(process.sentinel)
        except BaseException:
            # Cancelled: only the supervisor's own failure gets here. Leave nothing behind.
            _signal(process, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await trio.lowlevel.wait_readable(process.sentinel)
            raise
        finally:
            process.join()
            del self.processes[number]
        exitcode = process.exitcode
        process.close()
        assert exitcode is not None
        return exitcode


def _signal(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    if process.pid is not None and process.exitcode is None:
        # It may end between the check and the kill.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _describe(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"status {exitcode}"


def _logging_setup() -> tuple[int, str | None] | None:
    """The root logger's level and first handler's format, when the program set one up."""
    root = logging.getLogger()
    if not root.handlers:
        return None
    formatter = root.handlers[0].formatter
    return root.level, getattr(formatter, "_fmt", None)


# ----------------------------------------------------------------- in the worker process


def _worker_process(
    main: WorkerMain,
    number: int,
    workers: int,
    stop_timeout: float,
    logging_setup: tuple[int, str | None] | None,
) -> None:
    """The worker process's entry point (multiprocessing's target)."""
    # A Ctrl-C reaches the whole process group; until trio's signal receiver is installed, let
    # the supervisor's SIGTERM (which follows it) be what stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if logging_setup is not None and not logging.getLogger().handlers:
        level, fmt = logging_setup
        if fmt is None:
            logging.basicConfig(level=level)
        else:
            logging.basicConfig(level=level, format=fmt)
    trio.run(_worker_main, main, number, workers, stop_timeout)


async def _worker_main(main: WorkerMain, number: int, workers: int, stop_timeout: float) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, shutdown)
            nursery.start_soon(_stop_when_orphaned, shutdown, stop_timeout)
            await main(Worker(number=number, workers=workers, shutdown_event=shutdown))
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], shutdown: trio.Event) -> None:
    async for signum in signals:
        if not shutdown.is_set():
            logger.info("%s: shutting down", signal.Signals(signum).name)
        # Later signals change nothing: the supervisor kills a worker that takes too long.
        shutdown.set()


async def _stop_when_orphaned(shutdown: trio.Event, stop_timeout: float) -> None:
    # A supervisor killed with SIGKILL cannot stop its workers; they notice it is gone (the
    # parent's sentinel becomes readable) and stop by themselves rather than hold the port,
    # within the same stop_timeout the supervisor would have given them.
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:  # pragma: no cover - not started by us
        await trio.sleep(math.inf)
        return
    await trio.lowlevel.wait_readable(parent.sentinel)
    logger.warning("the supervisor is gone: shutting down")
    shutdown.set()
    await trio.sleep(stop_timeout)
    # What the supervisor's SIGKILL would have done: nobody is left to send it.
    logger.warning("still running %g seconds after the supervisor died: exiting", stop_timeout)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)

"""trio_chat/_workers.py and _reuseport.py: N processes on one port, supervised.

The process tests run tests/workers_app.py, whose workers answer each line with their number
and pid.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import trio
from server_process import ServerProcess
from worker_helpers import HOST, reserved_port, wait_for_stderr

from trio_chat import Worker, open_tcp_listeners_reuseport, run_workers
from trio_chat._reuseport import check_reuseport_supported

# Server and worker processes, timing on a shared machine: run once in CI (.ci/run).
pytestmark = pytest.mark.heavy

APP = str(Path(__file__).parent / "workers_app.py")
# Seconds for a whole process test (each worker starts in about half a second): a bound for
# hangs, with room for a loaded machine.
TIMEOUT = 60


# ------------------------------------------------------------------ the listeners


async def test_sockets_of_one_port_share_its_connections() -> None:
    with trio.fail_after(TIMEOUT):
        first = await open_tcp_listeners_reuseport(0, host=HOST)
        port = first[0].socket.getsockname()[1]
        second = await open_tcp_listeners_reuseport(port, host=HOST)
        accepted: Counter[int] = Counter()
        clients = []
        for _ in range(64):
            clients.append(await trio.open_tcp_stream(HOST, port))
        for number, listeners in enumerate((first, second)):
            sock = listeners[0].socket
            while True:  # what the kernel queued on this socket, without waiting
                try:
                    conn, _ = sock._sock.accept()  # type: ignore[attr-defined]
                except BlockingIOError:
                    break
                conn.close()
                accepted[number] += 1
        assert accepted[0] + accepted[1] == 64
        assert accepted[0] > 0
        assert accepted[1] > 0
        for stream in clients:
            await stream.aclose()
        for listener in [*first, *second]:
            await listener.aclose()


async def test_a_socket_without_reuseport_keeps_the_port() -> None:
    with socket.socket() as plain:
        plain.bind((HOST, 0))
        plain.listen()
        port = plain.getsockname()[1]
        with pytest.raises(OSError) as caught:
            await open_tcp_listeners_reuseport(port, host=HOST)
        assert caught.value.errno == errno.EADDRINUSE


async def test_wrong_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="port must be an int, not 'str'"):
        await open_tcp_listeners_reuseport("7000", host=HOST)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backlog must be an int or None, not 'float'"):
        await open_tcp_listeners_reuseport(0, host=HOST, backlog=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("platform", ["darwin", "win32", "openbsd7"])
async def test_platforms_that_do_not_spread_connections_are_refused(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    message = f"SO_REUSEPORT does not spread connections over processes on '{platform}'"
    with pytest.raises(NotImplementedError, match=message):
        check_reuseport_supported()
    with pytest.raises(NotImplementedError, match="load balancer"):
        await open_tcp_listeners_reuseport(0, host=HOST)
    with pytest.raises(NotImplementedError, match=message):
        run_workers(_never_run, 2)


async def _never_run(worker: Worker) -> None:  # pragma: no cover - never started
    raise AssertionError(worker)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be 1 or more, not 0"),
        ({"workers": "2"}, TypeError, "workers must be an int, not 'str'"),
        ({"workers": 2, "max_restarts": -1}, ValueError, "max_restarts must be 0 or more"),
        ({"workers": 2, "stop_timeout": 0}, ValueError, "stop_timeout must be more than 0"),
        ({"workers": 2, "restart_window": "1"}, TypeError, "restart_window must be a number"),
    ],
)
def test_run_workers_refuses_wrong_arguments(
    arguments: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        run_workers(_never_run, **arguments)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="main must be an async function, not 'int'"):
        run_workers(42, 2)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the supervisor


def ask(port: int) -> tuple[int, int]:
    """(worker number, pid) of the worker that answers a new connection."""
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"who\n")
        number, pid, _ = sock.makefile("rb").readline().split()
        return int(number), int(pid)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"


def wait_until(condition: object, timeout: float = TIMEOUT) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_workers_share_a_port_a_crashed_one_is_replaced_and_all_stop_cleanly() -> None:
    with reserved_port() as port, ServerProcess([APP, "--port", str(port)]) as server:
        started = {int(server.wait_for(r"worker (\d) listening")[1]) for _ in range(2)}
        assert started == {0, 1}
        answers = Counter(ask(port) for _ in range(40))
        assert {number for number, _ in answers} == {0, 1}  # 2 in 2**40 to fail by chance
        victim = next(pid for number, pid in answers if number == 0)
        os.kill(victim, signal.SIGKILL)
        wait_for_stderr(server, r"worker 0 exited with signal SIGKILL; restarting it in 0.1 s")
        server.wait_for(r"worker 0 listening")
        new = {pid for number, pid in (ask(port) for _ in range(40)) if number == 0}
        assert new
        assert victim not in new
        rest = server.stop()  # SIGINT: SIGTERM to each worker, which shuts down gracefully
    assert server.returncode == 0
    assert "worker 0 stopped" in rest
    assert "worker 1 stopped" in rest
    assert "all workers stopped" in rest
    assert "SIGINT: stopping 2 worker(s)" in server.stderr


def test_a_crash_loop_gives_up_and_stops_the_others() -> None:
    with (
        reserved_port() as port,
        ServerProcess([APP, "--port", str(port), "--crash-at-start"]) as server,
    ):
        server.wait()
    assert server.returncode == 1
    assert "cannot start (as asked)" in server.stderr  # the workers' tracebacks
    assert "restart 3 of at most 3 within 60 seconds" in server.stderr
    assert "gave up: worker " in server.stderr
    assert "workers crashed 3 times within 60 seconds already: not restarting it" in server.stderr


def test_a_worker_that_does_not_stop_is_killed_after_stop_timeout() -> None:
    with (
        reserved_port() as port,
        ServerProcess([APP, "--port", str(port), "--slow-stop"]) as server,
    ):
        for _ in range(2):
            server.wait_for(r"worker \d listening")
        started = time.monotonic()
        rest = server.stop()
        took = time.monotonic() - started
    assert server.returncode == 0
    assert "all workers stopped" in rest
    assert "still running 2 seconds after SIGTERM: killing them" in server.stderr
    assert took < TIMEOUT


def test_a_second_signal_kills_the_workers_at_once() -> None:
    with (
        reserved_port() as port,
        ServerProcess([APP, "--port", str(port), "--slow-stop"]) as server,
    ):
        for _ in range(2):
            server.wait_for(r"worker \d listening")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        wait_for_stderr(server, "SIGTERM: stopping 2 worker")
        server.proc.send_signal(signal.SIGINT)
        server.wait()
    assert server.returncode == 0
    assert "SIGINT again: killing 2 worker(s)" in server.stderr
    assert "still running" not in server.stderr


def test_workers_stop_by_themselves_when_the_supervisor_is_killed() -> None:
    with reserved_port() as port, ServerProcess([APP, "--port", str(port)]) as server:
        pids = [int(server.wait_for(r"worker \d listening \(pid (\d+)\)")[1]) for _ in range(2)]
        assert server.proc is not None
        server.proc.kill()
        server.wait()
        wait_until(lambda: all(pid_gone(pid) for pid in pids))
        assert "the supervisor is gone: shutting down" in server.stderr


def test_orphaned_workers_that_do_not_stop_exit_after_stop_timeout() -> None:
    with (
        reserved_port() as port,
        ServerProcess([APP, "--port", str(port), "--slow-stop"]) as server,
    ):
        pids = [int(server.wait_for(r"worker \d listening \(pid (\d+)\)")[1]) for _ in range(2)]
        assert server.proc is not None
        server.proc.kill()  # nobody is left to SIGKILL workers that ignore their shutdown event
        server.wait()  # the output ends when the last worker has exited (they share it)
        wait_until(lambda: all(pid_gone(pid) for pid in pids))
    assert "the supervisor is gone: shutting down" in server.stderr
    assert "still running 2 seconds after the supervisor died: exiting" in server.stderr

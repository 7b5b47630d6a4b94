"""The timeouts how-to's program (examples/howto/timeouts.py): a login deadline, an idle timeout,
a time limit on a hook's work, and a client that gives up. Timed with pytest-trio's
``autojump_clock``: the times are exact, and no test waits for real."""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import timeouts
import trio
import trio.testing
from server_process import ServerProcess, talk

from trio_chat.testing import open_peer

HOWTO = Path(__file__).parent.parent / "examples" / "howto"


async def test_a_login_lookups_and_quit() -> None:
    with trio.fail_after(5):
        async with open_peer(timeouts.Lookup()) as peer:
            await peer.send_all(b"LOOKUP fast\nLOGIN alice\r\nLOOKUP fast\nHELP\nQUIT\n")
            assert await peer.receive_all_until_eof() == (
                b"ERR LOGIN first\nOK alice\nVALUE FAST\n"
                b"ERR commands: LOGIN name, LOOKUP key, QUIT\nBYE\n"
            )


async def test_no_login_within_the_deadline_closes_even_a_chatty_client(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timeouts")
    with trio.fail_after(100):
        async with open_peer(timeouts.Lookup()) as peer:
            start = trio.current_time()
            # A byte a second: idle_timeout alone would never close this connection.
            with pytest.raises(trio.BrokenResourceError):
                for byte in b"HELP\n" * 100:
                    await peer.send_all(bytes([byte]))
                    await trio.sleep(1)
            assert trio.current_time() - start == pytest.approx(timeouts.LOGIN_TIMEOUT)
            # Two lines in ten bytes, ten seconds: answered, and closed all the same.
            assert await peer.receive_all_until_eof() == (
                b"ERR commands: LOGIN name, LOOKUP key, QUIT\n" * 2
            )
    assert f"no LOGIN within {timeouts.LOGIN_TIMEOUT} seconds" in caplog.text


async def test_after_login_only_the_idle_timeout_applies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(1000):
        async with open_peer(timeouts.Lookup()) as peer:
            start = trio.current_time()
            await trio.sleep(timeouts.LOGIN_TIMEOUT - 1)
            await peer.send_all(b"LOGIN alice\n")
            assert await peer.receive_until(b"\n") == b"OK alice"
            for _ in range(3):  # active for longer than the login deadline: not closed
                await trio.sleep(timeouts.IDLE_TIMEOUT - 1)
                await peer.send_all(b"LOOKUP fast\n")
                assert await peer.receive_until(b"\n") == b"VALUE FAST"
            last_input = trio.current_time()
            assert await peer.receive_all_until_eof() == b""  # silent: closed
            assert trio.current_time() - last_input == pytest.approx(timeouts.IDLE_TIMEOUT)
            assert last_input - start > timeouts.LOGIN_TIMEOUT + 2 * timeouts.IDLE_TIMEOUT


async def test_a_slow_lookup_answers_timeout_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_peer(timeouts.Lookup()) as peer:
            await peer.send_all(b"LOGIN alice\nLOOKUP slow\nLOOKUP fast\n")
            assert await peer.receive_until(b"\n") == b"OK alice"
            start = trio.current_time()
            assert await peer.receive_until(b"\n") == b"TIMEOUT"
            assert trio.current_time() - start == pytest.approx(timeouts.LOOKUP_TIMEOUT)
            assert await peer.receive_until(b"\n") == b"VALUE FAST"  # the connection goes on


async def test_the_backend_stand_in(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    assert await timeouts.lookup(b"slow") == b"SLOW"
    assert trio.current_time() - start == pytest.approx(timeouts.DELAYS[b"slow"])
    assert timeouts.DELAYS[b"slow"] > timeouts.LOOKUP_TIMEOUT


async def test_the_client_over_tcp() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(timeouts.main, 0)
            assert await timeouts.fetch("127.0.0.1", port, b"alice", b"fast") == b"VALUE FAST"
            nursery.cancel_scope.cancel()


async def test_the_client_gives_up_on_a_silent_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            start = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await timeouts.fetch("127.0.0.1", port, b"alice", b"fast")
            assert trio.current_time() - start == pytest.approx(timeouts.CLIENT_TIMEOUT)
            nursery.cancel_scope.cancel()


def test_the_program_runs_and_stops_on_ctrl_c() -> None:
    with ServerProcess([str(HOWTO / "timeouts.py"), "0"]) as server:
        port = server.port()
        reply = talk(port, b"LOGIN alice\nLOOKUP fast\nQUIT\n")
        assert reply == b"OK alice\nVALUE FAST\nBYE\n"
        assert server.stop() == "stopped"
    assert server.returncode == 0, server.stderr


async def test_a_command_trickled_in_is_cut_at_the_frame_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Logged in (so the login deadline no longer applies), then a line a byte every 5 seconds:
    # idle_timeout (60 s) would wait forever; frame_timeout does not.
    with trio.fail_after(1000):
        async with open_peer(timeouts.Lookup()) as peer:
            await peer.send_all(b"LOGIN alice\n")
            assert await peer.receive_until(b"\n") == b"OK alice"
            start = trio.current_time()
            with pytest.raises(trio.BrokenResourceError):  # bounded: cut long before
                for byte in b"LOOKUP " + b"k" * 100:
                    await peer.send_all(bytes([byte]))
                    await trio.sleep(5)
            assert trio.current_time() - start == pytest.approx(timeouts.FRAME_TIMEOUT, abs=5)


def test_the_slowloris_script_sees_the_defences_cut_it() -> None:
    # A small attack on the echo demo with a frame_timeout: every attacker is cut, and the
    # healthy client is answered meanwhile. (The script's full size is 2,000 attackers.)
    with ServerProcess(
        ["-m", "trio_chat", "echo", "--port", "0", "--frame-timeout", "1"]
    ) as server:
        port = server.port()
        result = subprocess.run(
            [
                *[sys.executable, str(HOWTO / "slowloris.py"), str(port)],
                *["--attackers", "40", "--seconds", "3", "--interval", "0.3"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attackers: 40, connected 40, refused 0, cut by the server 40" in result.stdout
    assert "failed 0" in result.stdout

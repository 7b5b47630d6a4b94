"""The README's handler (examples/readme_shout.py), tested with trio_chat.testing.

These tests are the examples of the how-to "Test a handler" (docs/howto-testing.rst), which
includes them; keep them short and readable.
"""

from __future__ import annotations

import re
import socket
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from readme_shout import Shout
from server_process import TIMEOUT, ServerProcess, talk

import trio_chat
from trio_chat import FrameTooLongError
from trio_chat.testing import byte_by_byte, every_split, exchange, open_peer

ROOT = Path(__file__).parent.parent


async def test_a_conversation() -> None:
    with trio.fail_after(5):
        async with open_peer(Shout()) as peer:
            await peer.send_all(b"hello\r\n")
            assert await peer.receive_until(b"\r\n") == b"HELLO"
            await peer.send_all(b"QUIT\r\n")
            assert await peer.receive_all_until_eof() == b"bye\r\n"


async def test_any_chunking_gives_the_same_replies() -> None:
    script = b"one\r\ntwo\r\nQUIT\r\nnot read\r\n"
    replies = b"ONE\r\nTWO\r\nbye\r\n"
    with trio.fail_after(10):
        for chunks in every_split(script):
            assert await exchange(Shout(), chunks) == replies, chunks
        assert await exchange(Shout(), byte_by_byte(script)) == replies


async def test_an_unfinished_line_is_not_answered() -> None:
    with trio.fail_after(5):
        assert await exchange(Shout(), b"one\r\ntwo\r") == b"ONE\r\n"


async def test_a_line_too_long_is_an_error() -> None:
    line = b"x" * trio_chat.DEFAULT_MAX_FRAME_SIZE  # Shout keeps the default limit
    with trio.fail_after(5):
        assert await exchange(Shout(), line + b"\r\n") == line.upper() + b"\r\n"
        with pytest.raises(FrameTooLongError):
            await exchange(Shout(), line + b"x\r\n")


async def test_pipelined_lines_are_answered_in_order() -> None:
    with trio.fail_after(5):
        async with open_peer(Shout()) as peer:
            await peer.send_all(b"".join(b"line %d\r\n" % i for i in range(1000)))
            for i in range(1000):
                assert await peer.receive_until(b"\r\n") == b"LINE %d" % i


async def test_over_tcp() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio_chat.serve_tcp, Shout, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                framed = trio_chat.FramedStream(client)
                await framed.send_all(b"over tcp\r\nQUIT\r\n")
                assert await framed.receive_until(b"\r\n") == b"OVER TCP"
                assert await framed.receive_until(b"\r\n") == b"bye"
            nursery.cancel_scope.cancel()


def test_ctrl_c_stops_the_program_with_one_line() -> None:
    with socket.socket() as sock:  # a free port for main(port)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    examples = str(ROOT / "examples")
    code = f"import sys, trio; sys.path.insert(0, {examples!r}); import readme_shout; "
    code += f"trio.run(readme_shout.main, {port})"
    with ServerProcess(["-c", code]) as server:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                reply = talk(port, b"hi\r\nQUIT\r\n")
                break
            except ConnectionRefusedError:
                assert server.proc is not None and server.proc.poll() is None, server.stderr
                assert time.monotonic() < deadline, "the example never listened"
                time.sleep(0.05)
        assert reply == b"HI\r\nbye\r\n"
        assert server.stop() == "stopped"  # sends SIGINT, as Ctrl-C does
    assert server.stderr == ""
    assert server.returncode == 0


def test_the_readme_shows_this_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    example = (ROOT / "examples" / "readme_shout.py").read_text(encoding="utf-8")
    assert example in blocks

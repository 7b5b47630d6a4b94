"""examples/http_request_reader.py: the asynchat docs' HTTP request reader, ported and completed."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import http_request_reader
import pytest
import trio
import trio.testing
from http_request_reader import HttpRequestHandler
from server_process import ServerProcess, talk

import trio_chat

EXAMPLE = Path(__file__).parent.parent / "examples" / "http_request_reader.py"

GET = b"GET /hello HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"
POST = (
    b"POST /form HTTP/1.1\r\nHost: example.org\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\n"
    b"name=trio&lang=python"
)


def response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


GET_REPLY = response(200, "OK", "Hello from trio_chat! You asked for /hello\n")
POST_REPLY = response(200, "OK", "You posted 2 field(s) to /form\nname = trio\nlang = python\n")


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some():
        out += data
    return bytes(out)


async def exchange(*pieces: bytes, eof: bool = False) -> tuple[bytes, HttpRequestHandler]:
    """Send *pieces* as separate reads to a handler over memory streams; return the reply."""
    client, server = trio.testing.memory_stream_pair()
    log: list[str] = []
    handler = HttpRequestHandler(server, log=log.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler.run)
        for piece in pieces:
            await client.send_all(piece)
            # Let the handler consume this piece before the next arrives: one read each.
            await trio.testing.wait_all_tasks_blocked()
        if eof:
            await client.send_eof()
        reply = await read_all(client)
    assert len(log) == 1, log
    return reply, handler


@pytest.mark.parametrize(("request_bytes", "reply"), [(GET, GET_REPLY), (POST, POST_REPLY)])
async def test_request_split_at_every_point(request_bytes: bytes, reply: bytes) -> None:
    with trio.fail_after(10):
        for cut in range(len(request_bytes) + 1):
            got, handler = await exchange(request_bytes[:cut], request_bytes[cut:])
            assert got == reply, cut
            assert handler.headers["host"] == "example.org"
            assert handler.get_terminator() is None


async def test_request_byte_by_byte() -> None:
    with trio.fail_after(10):
        got, handler = await exchange(*(POST[i : i + 1] for i in range(len(POST))))
    assert got == POST_REPLY
    assert handler.cgi_data == {"name": ["trio"], "lang": ["python"]}


async def test_bytes_after_the_body_are_ignored() -> None:
    # "browsers sometimes over-send": the terminator becomes None and the connection closes.
    with trio.fail_after(5):
        got, handler = await exchange(POST + b"\r\nGET /again HTTP/1.0\r\n\r\n")
    assert got == POST_REPLY
    assert handler.cgi_data == {"name": ["trio"], "lang": ["python"]}


async def test_post_with_an_empty_body_is_answered() -> None:
    # In the asynchat fragment, set_terminator(0) acts as None and the request would hang.
    with trio.fail_after(5):
        got, _ = await exchange(b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    assert got == response(200, "OK", "You posted 0 field(s) to /x\n")


async def test_other_content_types_are_summarised() -> None:
    with trio.fail_after(5):
        got, _ = await exchange(
            b"POST /up HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
    assert got == response(
        200, "OK", "You posted 1 field(s) to /up\n(body) = 2 bytes of application/json\n"
    )


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason", "text"),
    [
        (b"HELLO\r\n\r\n", 400, "Bad Request", "malformed request line\n"),
        (b"GET / HTTP/1.0\r\nno colon\r\n\r\n", 400, "Bad Request", "malformed header field\n"),
        (b"GET / HTTP/1.0\r\nHost : x\r\n\r\n", 400, "Bad Request", "malformed header field\n"),
        (b"POST / HTTP/1.0\r\n\r\n", 411, "Length Required", "POST needs a Content-Length\n"),
        (
            b"POST / HTTP/1.0\r\nContent-Length: -1\r\n\r\n",
            400,
            "Bad Request",
            "bad Content-Length: '-1'\n",
        ),
        (
            b"POST / HTTP/1.0\r\nContent-Length: 1048577\r\n\r\n",
            413,
            "Content Too Large",
            "at most 1048576 bytes\n",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
            "Not Implemented",
            "chunked bodies are not supported\n",
        ),
        (b"PUT / HTTP/1.0\r\n\r\n", 501, "Not Implemented", "only GET and POST are implemented\n"),
    ],
)
async def test_errors_are_answered(
    request_bytes: bytes, status: int, reason: str, text: str
) -> None:
    with trio.fail_after(5):
        got, _ = await exchange(request_bytes)
    assert got == response(status, reason, text)


async def test_an_oversized_header_block_ends_the_connection() -> None:
    client, server = trio.testing.memory_stream_pair()
    handler = HttpRequestHandler(server, log=print)
    await client.send_all(b"GET / HTTP/1.0\r\nX: " + b"a" * 20_000)  # buffered in memory
    with trio.fail_after(5), pytest.raises(trio_chat.FrameTooLongError, match="16384 bytes"):
        await handler.run()


async def test_a_silent_client_is_disconnected(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(HttpRequestHandler.idle_timeout + 1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(HttpRequestHandler(server, log=print).run)
            assert await read_all(client) == b""
    assert trio.current_time() == pytest.approx(HttpRequestHandler.idle_timeout)


async def test_the_program_serves_get_and_post_over_tcp() -> None:
    log: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(http_request_reader.serve, "127.0.0.1", 0, log=log.append)
            )
            for request_bytes, reply in [(GET, GET_REPLY), (POST, POST_REPLY)]:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(request_bytes)
                    assert await read_all(stream) == reply
            nursery.cancel_scope.cancel()
    assert [line.split(" ", 1)[1] for line in log] == ["GET /hello 200", "POST /form 200"]
    assert all(line.startswith("127.0.0.1:") for line in log)


def test_the_script_runs_and_stops_on_ctrl_c() -> None:
    with ServerProcess([str(EXAMPLE), "--port", "0"]) as server:
        port = server.port()
        assert talk(port, GET) == GET_REPLY
        out = server.stop()
    assert server.returncode == 0, server.stderr
    assert re.search(r"^127\.0\.0\.1:\d+ GET /hello 200$", out, re.MULTILINE), out

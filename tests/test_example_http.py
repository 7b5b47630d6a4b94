"""The HTTP/1.1 demo (trio_chat/demos/http.py, run by examples/http_request_reader.py and
``python -m trio_chat http``): requests in memory, split every way, and the server under load."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from server_process import ServerProcess, probe_in_a_process, talk
from stream_helpers import read_all

from trio_chat.demos import http
from trio_chat.demos.http import FormSummary, HttpRequestHandler

EXAMPLE = Path(__file__).parent.parent / "examples" / "http_request_reader.py"

GET = b"GET /hello HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"
POST = (
    b"POST /form HTTP/1.1\r\nHost: example.org\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\n"
    b"name=trio&lang=python"
)
GET_TEXT = b"Hello from trio_chat! You asked for /hello\n"
POST_TEXT = b"You posted 2 field(s) to /form\nname = trio\nlang = python\n"


@attrs.frozen
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def responses(data: bytes, methods: str = "") -> Iterator[Response]:
    """The responses in *data*, in order; *methods* names the requests' methods, one letter each
    (``H`` for HEAD: a response without a body), where they are not all GET or POST."""
    rest = data
    answered = 0
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(": ")
            assert name.lower() not in headers, line
            headers[name.lower()] = value
        head_request = methods[answered : answered + 1] == "H"
        size = 0 if head_request or status == "100" else int(headers["content-length"])
        answered += status != "100"
        body, rest = rest[:size], rest[size:]
        assert len(body) == size, "truncated body"
        yield Response(int(status), reason, headers, body)


async def exchange(*pieces: bytes, eof: bool = True) -> tuple[bytes, list[str]]:
    """Send *pieces* as separate reads to a handler over memory streams (then EOF): everything
    it answered until it closed, and its access log."""
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
    return reply, log


def only(reply: bytes) -> Response:
    [response] = responses(reply)
    return response


# ------------------------------------------------------------------------- requests in memory


@pytest.mark.parametrize(("request_bytes", "text"), [(GET, GET_TEXT), (POST, POST_TEXT)])
async def test_request_split_at_every_point(request_bytes: bytes, text: bytes) -> None:
    with trio.fail_after(20):
        for cut in range(len(request_bytes) + 1):
            reply, log = await exchange(request_bytes[:cut], request_bytes[cut:])
            response = only(reply)
            assert (response.status, response.body) == (200, text), cut
            assert "connection" not in response.headers  # HTTP/1.1: kept alive until EOF
            assert len(log) == 1


async def test_request_byte_by_byte() -> None:
    with trio.fail_after(10):
        reply, _ = await exchange(*(POST[i : i + 1] for i in range(len(POST))))
    assert only(reply).body == POST_TEXT


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    head = b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"
    pipeline = GET + POST + head + GET.replace(b"/hello", b"/last")
    with trio.fail_after(10):
        for pieces in ([pipeline], [pipeline[i : i + 7] for i in range(0, len(pipeline), 7)]):
            reply, log = await exchange(*pieces)
            got = list(responses(reply, "GPHG"))
            assert [r.body for r in got] == [
                GET_TEXT,
                POST_TEXT,
                b"",
                GET_TEXT.replace(b"hello", b"last"),
            ]
            assert [line.split(" ", 1)[1] for line in log] == [
                "GET /hello 200",
                "POST /form 200",
                "HEAD /h 200",
                "GET /last 200",
            ]


async def test_head_gets_the_headers_of_get_and_no_body() -> None:
    with trio.fail_after(5):
        reply, _ = await exchange(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    head, get = responses(reply, "HG")
    assert head.body == b""
    assert head.headers["content-length"] == str(len(GET_TEXT))
    assert get.body == GET_TEXT


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /hello HTTP/1.1\nHost: x\n\n",  # bare LF line ends
        b"GET /hello HTTP/1.1\r\nHost: x\n\r\n",  # mixed
        b"\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",  # an empty line first (RFC 9112 2.2)
    ],
)
async def test_line_ends_may_be_bare_lf(request_bytes: bytes) -> None:
    with trio.fail_after(5):
        reply, _ = await exchange(request_bytes)
    assert only(reply).body == GET_TEXT


async def test_http_10_closes_unless_asked_to_keep_alive() -> None:
    with trio.fail_after(5):
        reply, log = await exchange(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n", eof=False)
        assert only(reply).headers["connection"] == "close"
        assert len(log) == 1  # the second request was not processed
        reply, log = await exchange(
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n", eof=False
        )
    first, second = responses(reply)
    assert first.headers["connection"] == "keep-alive"
    assert second.headers["connection"] == "close"


async def test_connection_close_is_honoured() -> None:
    with trio.fail_after(5):
        reply, log = await exchange(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET, eof=False
        )
    assert only(reply).headers["connection"] == "close"
    assert len(log) == 1


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    client, server = trio.testing.memory_stream_pair()
    handler = HttpRequestHandler(server, log=lambda line: None)
    head, _, body = POST.replace(b"Host:", b"Expect: 100-continue\r\nHost:").partition(b"\r\n\r\n")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler.run)
            await client.send_all(head + b"\r\n\r\n")
            assert await client.receive_some() == b"HTTP/1.1 100 Continue\r\n\r\n"
            await client.send_all(body)
            await client.send_eof()
            assert only(await read_all(client)).body == POST_TEXT


async def test_a_chunked_body_is_read_chunk_by_chunk() -> None:
    request = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nname=\r\n4\r\ntrio\r\n7\r\n&lang=p\r\n5\nython\n0\r\nTrailer: yes\r\n\r\n"
    )
    with trio.fail_after(10):
        for cut in range(0, len(request), 3):
            reply, _ = await exchange(request[:cut], request[cut:] + GET)
            post, get = responses(reply)
            assert post.body == b"You posted 2 field(s) to /c\nname = trio\nlang = python\n"
            assert get.body == GET_TEXT


async def test_a_big_form_is_counted_and_shown_in_part_and_nothing_is_kept() -> None:
    form = b"&".join(b"f%d=%d" % (i, i) for i in range(80_000))
    request = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(form) + form
    client, server = trio.testing.memory_stream_pair()
    handler = HttpRequestHandler(server, log=lambda line: None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler.run)
            await client.send_all(request)
            reader = bytearray()
            while not reader.endswith(b"more\n"):
                reader += await client.receive_some()
            response = only(bytes(reader))
            lines = response.body.decode().splitlines()
            assert lines[0] == "You posted 80000 field(s) to /big"
            assert lines[1:4] == ["f0 = 0", "f1 = 1", "f2 = 2"]
            assert len(lines) == 1 + http.FORM_FIELDS_SHOWN + 1
            assert lines[-1] == f"... and {80_000 - http.FORM_FIELDS_SHOWN} more"
            # Nothing of the request is kept once it is answered.
            await trio.testing.wait_all_tasks_blocked()
            assert (handler.request, handler.form, handler.pieces) == (None, None, [])
            await client.send_eof()


def test_form_summary_keeps_a_bounded_prefix() -> None:
    summary = FormSummary()
    for piece in [b"a=1&b=", b"2&c", b"=3&" + b"x" * 10_000, b"&last=1"]:
        summary.feed(piece)
    assert summary.fields == 5
    assert len(summary.kept) == http.FORM_BYTES_KEPT
    assert summary.shown() == [("a", "1"), ("b", "2"), ("c", "3")]  # x... was cut: left out
    assert FormSummary().fields == 0


@pytest.mark.parametrize(
    ("request_bytes", "status", "text"),
    [
        (b"HELLO\r\n\r\n", 400, "malformed request line"),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request line"),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1 only"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "HTTP/1.1 needs a Host header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host header"),
        (b"GET / HTTP/1.0\r\nno colon\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.0\r\nHost : x\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.0\r\nA: b\r\n folded\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.0\r\nA: b\rc\r\n\r\n", 400, "control character in a header field"),
        (b"POST / HTTP/1.0\r\nContent-Length: -1\r\n\r\n", 400, "bad Content-Length: '-1'"),
        (b"POST / HTTP/1.0\r\nContent-Length: 1, 2\r\n\r\n", 400, "bad Content-Length"),
        (b"POST / HTTP/1.0\r\nContent-Length: 1048577\r\n\r\n", 413, "at most 1048576 bytes"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
            "Content-Length with Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "transfer coding 'gzip'",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "bad chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            400,
            "chunk data longer than its size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n",
            413,
            "at most 1048576 bytes",
        ),
        (b"PUT / HTTP/1.0\r\n\r\n", 501, "only GET, HEAD and POST are implemented"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417, "cannot meet Expect"),
        (b"GET /" + b"a" * 9000, 414, "request line over 8 KiB"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 17_000, 431, "header block over 16 KiB"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "over 100 header fields"),
    ],
)
async def test_errors_are_answered_then_the_connection_closed(
    request_bytes: bytes, status: int, text: str
) -> None:
    with trio.fail_after(5):
        reply, log = await exchange(request_bytes + GET, eof=False)  # the GET is never read
    response = only(reply)
    assert response.status == status
    assert response.headers["connection"] == "close"
    assert response.body.decode().startswith(text), response.body
    assert len(log) == 1


async def test_a_silent_client_is_disconnected(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(http.IDLE_TIMEOUT + 1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(HttpRequestHandler(server, log=print).run)
            assert await read_all(client) == b""
    assert trio.current_time() == pytest.approx(http.IDLE_TIMEOUT)


async def test_a_header_block_trickled_in_is_cut_at_the_header_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    sent = 0
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(HttpRequestHandler(server, log=print).run)
            with pytest.raises(trio.BrokenResourceError):
                for byte in GET[:-2] + b"X-Slow: " + b"z" * 1000:  # bounded; cut well before
                    await client.send_all(bytes([byte]))
                    sent += 1
                    await trio.sleep(1)  # every byte well within idle_timeout
    assert trio.current_time() == pytest.approx(http.HEADER_TIMEOUT, abs=1.5)
    assert sent < 15


async def test_a_slow_but_steady_body_gets_time_in_proportion_to_its_size(
    autojump_clock: trio.abc.Clock,
) -> None:
    form = b"a=" + b"b" * (200 * 1024 - 2)  # 200 KiB: HEADER_TIMEOUT + 3.1 s to arrive
    head = b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(form)
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(HttpRequestHandler(server, log=print).run)
            await client.send_all(head)
            for start in range(0, len(form), 16 * 1024):  # 16 KiB a second: 12.5 s in all
                await client.send_all(form[start : start + 16 * 1024])
                await trio.sleep(1)
            await client.send_eof()
            reply = only(await read_all(client))
    assert reply.body.startswith(b"You posted 1 field(s) to /f\n")


# ----------------------------------------------------------------------------- over TCP


async def test_the_demo_serves_over_tcp() -> None:
    log: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(http.serve, "127.0.0.1", 0, log=log.append))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(GET + POST + b"GET /bye HTTP/1.1\r\nHost: x\r\n")
                await stream.send_all(b"Connection: close\r\n\r\n")
                first, second, third = responses(await read_all(stream))
            assert (first.body, second.body, third.headers["connection"]) == (
                GET_TEXT,
                POST_TEXT,
                "close",
            )
            nursery.cancel_scope.cancel()
    assert [line.split(" ", 1)[1] for line in log] == [
        "GET /hello 200",
        "POST /form 200",
        "GET /bye 200",
    ]
    assert all(line.startswith("127.0.0.1:") for line in log)


def test_the_script_runs_and_stops_on_ctrl_c() -> None:
    with ServerProcess([str(EXAMPLE), "--port", "0"]) as server:
        port = server.port()
        reply = talk(port, GET.replace(b"Accept", b"Connection: close\r\nAccept"))
        assert only(reply).body == GET_TEXT
        out = server.stop()
    assert server.returncode == 130, server.stderr
    assert re.search(r"^127\.0\.0\.1:\d+ GET /hello 200$", out, re.MULTILINE), out


# ------------------------------------------------------------- memory under load (subprocess)

FORM_CLIENTS = 98
FORM_SIZE = 1024 * 1024
# Peak RSS growth allowed while 98 clients post 1 MiB forms at once. What the server holds per
# connection is a read (64 KiB) and the 4 KiB a form summary keeps; a server that buffered the
# bodies would need 98 MiB for them alone, and one that parsed them whole (the asynchat
# fragment's parse()) gigabytes.
FORM_RSS_LIMIT = 200 * 1024 * 1024


PROC = Path("/proc/self/status").exists()


def reset_peak(pid: int) -> None:
    """VmHWM := VmRSS now (Linux 4.0+), so the peak measured is the test's own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@pytest.mark.heavy
async def test_98_clients_posting_1_mib_forms_cost_little_and_block_no_one() -> None:
    if not PROC:
        pytest.skip("needs /proc to measure the server's memory")
    # A form of 1 MiB with a field every 8 bytes: ~131,000 fields per request.
    form = (b"field=x&" * (FORM_SIZE // 8))[:-1]
    request = (
        b"POST /form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(form)
    ) + form
    with ServerProcess(["-m", "trio_chat", "http", "--port", "0"]) as server:
        port = server.port()
        assert server.proc is not None
        pid = server.proc.pid
        assert talk(port, GET.replace(b"Accept", b"Connection: close\r\nAccept"))  # warm up
        reset_peak(pid)
        baseline = memory_kib(pid)["VmRSS"]
        answered = 0

        async def post() -> None:
            nonlocal answered
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(request)
                response = only(await read_all(stream))
                assert response.body.startswith(b"You posted 131072 field(s) to /form\n")
                answered += 1

        healthy = GET.replace(b"Accept", b"Connection: close\r\nAccept")
        times: list[float] = []

        async def probing() -> None:
            # A healthy client in a process of its own, for the 2 seconds the posts take.
            times.extend(
                await trio.to_thread.run_sync(
                    probe_in_a_process, port, healthy, b"HTTP/1.1 200 OK\r\n", 2.0
                )
            )

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probing)
                await trio.sleep(0.2)  # the probe process is up
                posting = time.perf_counter()
                async with trio.open_nursery() as posters:
                    for _ in range(FORM_CLIENTS):
                        posters.start_soon(post)
                elapsed = time.perf_counter() - posting
        peak = memory_kib(pid)["VmHWM"]
        server.stop()
    growth = (peak - baseline) * 1024
    print(
        f"\n{FORM_CLIENTS} clients x 1 MiB forms in {elapsed:.2f} s: server RSS baseline "
        f"{baseline / 1024:.1f} MiB, peak growth {growth / 2**20:.1f} MiB "
        f"(limit {FORM_RSS_LIMIT / 2**20:.0f} MiB); {len(times)} healthy GETs meanwhile, the "
        f"slowest {max(times) * 1000:.0f} ms"
    )
    assert answered == FORM_CLIENTS
    assert growth < FORM_RSS_LIMIT
    # The figure is printed; the bound only catches a blocked event loop (the bug: 30 s). A wide
    # bound: CI machines are shared and run four suites at once.
    assert max(times) < 5.0

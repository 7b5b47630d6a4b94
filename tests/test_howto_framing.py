"""The framing how-to's programs (examples/howto/): length-prefixed messages, netstrings, and a
blob store that switches between line and raw mode. Each has an AsyncChat and a FramedStream
implementation; one suite runs against both, in memory, whatever the chunking, and each program
is also served over loopback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import length_prefixed
import line_raw
import netstrings
import pytest
import trio
from server_process import ServerProcess, talk

from trio_chat import FrameTooLongError
from trio_chat.testing import Target, byte_by_byte, every_split, exchange, open_peer

HOWTO = Path(__file__).parent.parent / "examples" / "howto"
MakeTarget = Callable[[], Target]


async def serve_and_talk(
    main: Callable[..., Awaitable[object]], request: bytes, expect: bytes
) -> bytes:
    """Run *main* (one of the programs' ``main``) on port 0; send *request* over TCP and read
    until the reply ends with *expect*; stop the server; return the reply."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(main, 0)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                reply = b""
                while not reply.endswith(expect):
                    data = await stream.receive_some()
                    assert data, f"EOF after {reply!r}"
                    reply += data
            nursery.cancel_scope.cancel()
    return reply


# ---------------------------------------------------------------- length-prefixed messages


@pytest.fixture(
    params=[length_prefixed.LengthPrefixedChat, lambda: length_prefixed.length_prefixed_session],
    ids=["AsyncChat", "FramedStream"],
)
def make_lp(request: pytest.FixtureRequest) -> MakeTarget:
    return request.param  # type: ignore[no-any-return]


LP_SCRIPT = b"5\nhello" + b"0\n" + b"11\nline\nbreak!" + b"3\n\r\n\n"
LP_TRANSCRIPT = b"5\nHELLO" + b"0\n" + b"11\nLINE\nBREAK!" + b"3\n\r\n\n"


def test_length_prefixed_frame_and_parse_length() -> None:
    assert length_prefixed.frame(b"line\nbreak!") == b"11\nline\nbreak!"
    assert length_prefixed.parse_length(b"0") == 0
    assert length_prefixed.parse_length(b"%d" % length_prefixed.MAX_MESSAGE) == (
        length_prefixed.MAX_MESSAGE
    )
    for header in [b"", b"-1", b"+1", b" 1", b"1_0", b"0x10", b"\xd9\xa1"]:
        with pytest.raises(ValueError, match="expected decimal digits"):
            length_prefixed.parse_length(header)
    with pytest.raises(ValueError, match="larger than MAX_MESSAGE"):
        length_prefixed.parse_length(b"%d" % (length_prefixed.MAX_MESSAGE + 1))


async def test_length_prefixed_conversation(make_lp: MakeTarget) -> None:
    with trio.fail_after(5):
        async with open_peer(make_lp()) as peer:
            await peer.send_all(length_prefixed.frame(b"a\nb"))
            assert await peer.receive_until(b"\n") == b"3"
            assert await peer.receive_exactly(3) == b"A\nB"
            await peer.send_all(b"0\n")
            assert await peer.receive_exactly(2) == b"0\n"


async def test_length_prefixed_every_split(make_lp: MakeTarget) -> None:
    with trio.fail_after(20):
        for chunks in every_split(LP_SCRIPT):
            assert await exchange(make_lp(), chunks) == LP_TRANSCRIPT, chunks
        assert await exchange(make_lp(), byte_by_byte(LP_SCRIPT)) == LP_TRANSCRIPT


async def test_length_prefixed_largest_message(make_lp: MakeTarget) -> None:
    body = b"x" * length_prefixed.MAX_MESSAGE
    with trio.fail_after(10):
        reply = await exchange(make_lp(), length_prefixed.frame(body) + b"2\nok")
    assert reply == length_prefixed.frame(body.upper()) + b"2\nOK"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"%d" % (length_prefixed.MAX_MESSAGE + 1), "larger than MAX_MESSAGE"),
        (b"five", "bad length header b'five'"),
        (b"", "bad length header b''"),
    ],
)
async def test_length_prefixed_bad_header_closes_after_the_earlier_replies(
    make_lp: MakeTarget, header: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="length_prefixed")
    with trio.fail_after(5):
        reply = await exchange(make_lp(), b"2\nhi" + header + b"\n" + b"2\nno")
    assert reply == b"2\nHI"  # the reply before it is sent; nothing after it is read
    assert reason in caplog.text


async def test_length_prefixed_header_too_long(make_lp: MakeTarget) -> None:
    with trio.fail_after(5), pytest.raises(FrameTooLongError):
        await exchange(make_lp(), b"1" * (length_prefixed.MAX_HEADER + 1) + b"\n")


async def test_length_prefixed_input_ends_inside_a_message(make_lp: MakeTarget) -> None:
    with trio.fail_after(5):
        assert await exchange(make_lp(), b"2\nhi5\nhel") == b"2\nHI"
        assert await exchange(make_lp(), b"2\nhi12") == b"2\nHI"


async def test_length_prefixed_over_tcp() -> None:
    reply = await serve_and_talk(length_prefixed.main, b"5\nhello0\n", b"0\n")
    assert reply == b"5\nHELLO0\n"


# ------------------------------------------------------------------------------ netstrings


@pytest.fixture(
    params=[netstrings.NetstringChat, lambda: netstrings.netstring_session],
    ids=["AsyncChat", "FramedStream"],
)
def make_ns(request: pytest.FixtureRequest) -> MakeTarget:
    return request.param  # type: ignore[no-any-return]


NS_SCRIPT = b"5:hello," + b"0:," + b"7:a:b,c\n\n,"
NS_TRANSCRIPT = b"5:HELLO," + b"0:," + b"7:A:B,C\n\n,"


def test_netstring_and_parse_length() -> None:
    assert netstrings.netstring(b"hello world!") == b"12:hello world!,"
    assert netstrings.netstring(b"") == b"0:,"
    assert netstrings.parse_length(b"0") == 0
    assert netstrings.parse_length(b"10") == 10
    with pytest.raises(ValueError, match="leading zeros"):
        netstrings.parse_length(b"05")
    with pytest.raises(ValueError, match="expected decimal digits"):
        netstrings.parse_length(b"-5")
    with pytest.raises(ValueError, match="larger than MAX_STRING"):
        netstrings.parse_length(b"%d" % (netstrings.MAX_STRING + 1))


async def test_netstrings_every_split(make_ns: MakeTarget) -> None:
    with trio.fail_after(20):
        for chunks in every_split(NS_SCRIPT):
            assert await exchange(make_ns(), chunks) == NS_TRANSCRIPT, chunks
        assert await exchange(make_ns(), byte_by_byte(NS_SCRIPT)) == NS_TRANSCRIPT


async def test_netstrings_largest(make_ns: MakeTarget) -> None:
    data = b"y" * netstrings.MAX_STRING
    with trio.fail_after(10):
        reply = await exchange(make_ns(), netstrings.netstring(data) + b"1:z,")
    assert reply == netstrings.netstring(data.upper()) + b"1:Z,"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"3:abc;", "ends with b';'"),
        (b"3:ab,", "ends with b'c'"),  # the length was wrong: the comma is a byte too early
        (b"03:abc,", "leading zeros"),
        (b":abc,", "bad netstring length b''"),
        (b"%d:" % (netstrings.MAX_STRING + 1), "larger than MAX_STRING"),
    ],
)
async def test_netstrings_malformed_closes_after_the_earlier_replies(
    make_ns: MakeTarget, bad: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="netstrings")
    with trio.fail_after(5):
        reply = await exchange(make_ns(), b"2:ok," + bad + b"cd" + b"2:no,")
    assert reply == b"2:OK,"
    assert reason in caplog.text


async def test_netstrings_length_too_long(make_ns: MakeTarget) -> None:
    with trio.fail_after(5), pytest.raises(FrameTooLongError):
        await exchange(make_ns(), b"1" * (netstrings.MAX_LENGTH_DIGITS + 1) + b":")


async def test_netstrings_input_ends_inside_a_netstring(make_ns: MakeTarget) -> None:
    with trio.fail_after(5):
        assert await exchange(make_ns(), b"2:ok,5:hel") == b"2:OK,"
        assert await exchange(make_ns(), b"2:ok,5:hello") == b"2:OK,"  # no comma yet
        assert await exchange(make_ns(), b"2:ok,12") == b"2:OK,"


async def test_netstrings_over_tcp() -> None:
    reply = await serve_and_talk(netstrings.main, b"5:hello,0:,", b"0:,")
    assert reply == b"5:HELLO,0:,"


# -------------------------------------------------------------------- line and raw mode

Store = dict[bytes, bytes]
MakeBlob = Callable[[Store], Target]


def blob_chat(store: Store) -> Target:
    return line_raw.BlobChat(store=store)


def blob_session(store: Store) -> Target:
    return functools.partial(line_raw.blob_session, store=store)


@pytest.fixture(params=[blob_chat, blob_session], ids=["AsyncChat", "FramedStream"])
def make_blob(request: pytest.FixtureRequest) -> MakeBlob:
    return request.param  # type: ignore[no-any-return]


# A body that looks like commands, a command right after a body, \r\n line ends, an empty blob.
BLOB_SCRIPT = (
    b"PUT a 11\nGET b\nQUIT\nGET a\r\nPUT empty 0\nGET empty\nGET nothing\n"
    b"UPLOAD c\nQUIT\nPUT x 1\n\x00"
)
BLOB_TRANSCRIPT = b"OK\nDATA 11\nGET b\nQUIT\nOK\nDATA 0\nNOT_FOUND\nOK 14\n"


async def test_blob_store_conversation(make_blob: MakeBlob) -> None:
    store: Store = {}
    with trio.fail_after(5):
        async with open_peer(make_blob(store)) as peer:
            await peer.send_all(b"PUT greeting 6\nhello\n")
            assert await peer.receive_until(b"\n") == b"OK"
            await peer.send_all(b"GET greeting\n")
            assert await peer.receive_until(b"\n") == b"DATA 6"
            assert await peer.receive_exactly(6) == b"hello\n"
            await peer.send_all(b"QUIT\n")
            assert await peer.receive_all_until_eof() == b"BYE\n"
    assert store == {b"greeting": b"hello\n"}


async def test_blob_store_every_split(make_blob: MakeBlob) -> None:
    with trio.fail_after(30):
        for chunks in every_split(BLOB_SCRIPT):
            store: Store = {}
            assert await exchange(make_blob(store), chunks) == BLOB_TRANSCRIPT, chunks
            assert store == {b"a": b"GET b\nQUIT\n", b"empty": b"", b"c": b"QUIT\nPUT x 1\n\x00"}
        assert await exchange(make_blob({}), byte_by_byte(BLOB_SCRIPT)) == BLOB_TRANSCRIPT


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"FETCH a", b"ERR unknown command 'FETCH'\n"),
        (b"GET", b"ERR GET takes 1 argument(s), separated by one space\n"),
        (b"GET  a", b"ERR GET takes 1 argument(s), separated by one space\n"),
        (b"QUIT now", b"ERR QUIT takes 0 argument(s), separated by one space\n"),
        (b"PUT a -1", b"ERR PUT's size must be decimal digits\n"),
        (b"PUT a %d" % (line_raw.MAX_BLOB + 1), b"ERR a blob is at most 1048576 bytes\n"),
    ],
)
async def test_blob_store_bad_command_closes(
    make_blob: MakeBlob, command: bytes, reply: bytes
) -> None:
    store: Store = {}
    with trio.fail_after(5):
        # What follows a refused PUT would be its body: it must not be read as commands.
        transcript = await exchange(make_blob(store), b"GET a\n" + command + b"\nPUT b 1\nx")
    assert transcript == b"NOT_FOUND\n" + reply
    assert store == {}


async def test_blob_store_largest_blobs(make_blob: MakeBlob) -> None:
    blob = bytes(range(256)) * (line_raw.MAX_BLOB // 256)
    with trio.fail_after(10):
        store: Store = {}
        script = b"PUT a %d\n%sUPLOAD b\n%s" % (len(blob), blob, blob)
        assert await exchange(make_blob(store), script) == b"OK\nOK %d\n" % len(blob)
        assert store == {b"a": blob, b"b": blob}
        store = {}
        assert await exchange(make_blob(store), b"UPLOAD c\n" + blob + b"!") == (
            b"ERR a blob is at most 1048576 bytes\n"
        )
        assert store == {}


async def test_blob_store_line_too_long(make_blob: MakeBlob) -> None:
    with trio.fail_after(5), pytest.raises(FrameTooLongError):
        await exchange(make_blob({}), b"GET " + b"n" * line_raw.MAX_LINE + b"\n")


async def test_blob_store_input_ends_inside_a_body(make_blob: MakeBlob) -> None:
    store: Store = {}
    with trio.fail_after(5):
        assert await exchange(make_blob(store), b"PUT a 1\nxPUT b 5\nabc") == b"OK\n"
    assert store == {b"a": b"x"}  # b, cut short, is dropped


async def test_blob_store_over_tcp_shares_the_store() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(line_raw.main, 0)
            for request, expect in [
                (b"PUT k 3\nabc", b"OK\n"),
                (b"GET k\nQUIT\n", b"DATA 3\nabcBYE\n"),  # another connection sees it
            ]:
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(request)
                    reply = b""
                    while not reply.endswith(expect):
                        data = await stream.receive_some()
                        assert data, f"EOF after {reply!r}"
                        reply += data
                    assert reply == expect
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ as programs


@pytest.mark.parametrize(
    ("program", "request_bytes", "expect"),
    [
        ("length_prefixed.py", b"5\nhello0\n", b"5\nHELLO0\n"),
        ("netstrings.py", b"5:hello,0:,", b"5:HELLO,0:,"),
        ("line_raw.py", b"PUT a 5\nhelloGET a\nQUIT\n", b"OK\nDATA 5\nhelloBYE\n"),
    ],
)
def test_each_program_runs_and_stops_on_ctrl_c(
    program: str, request_bytes: bytes, expect: bytes
) -> None:
    with ServerProcess([str(HOWTO / program), "0"]) as server:
        port = server.port()
        assert talk(port, request_bytes, until_eof=False, expect=expect) == expect
        assert server.stop() == "stopped"
    assert server.returncode == 0, server.stderr

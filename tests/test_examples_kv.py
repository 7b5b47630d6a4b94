"""One test suite, two implementations: examples/kv_chat.py (AsyncChat) and kv_framed.py
(FramedStream) must behave identically, whatever the chunking of their input."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import trio
from kv_chat import MAX_LINE, KVChat, execute
from kv_framed import kv_session

from trio_chat import FrameTooLongError
from trio_chat.testing import Target, byte_by_byte, every_split, exchange, open_peer

Store = dict[bytes, bytes]
MakeServer = Callable[[Store], Target]


def make_chat(store: Store) -> Target:
    return KVChat(store=store)


def make_framed(store: Store) -> Target:
    return functools.partial(kv_session, store=store)


@pytest.fixture(params=[make_chat, make_framed], ids=["AsyncChat", "FramedStream"])
def make_server(request: pytest.FixtureRequest) -> MakeServer:
    return request.param  # type: ignore[no-any-return]


SCRIPT = b"SET a 1\r\nGET a\nSET b two words\nGET b\r\nDEL a\nGET a\nDEL a\nQUIT\n"
TRANSCRIPT = (
    b"OK\r\nVALUE 1\r\nOK\r\nVALUE two words\r\nDELETED\r\nNOT_FOUND\r\nNOT_FOUND\r\nBYE\r\n"
)


async def test_a_conversation(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        store: Store = {}
        async with open_peer(make_server(store)) as peer:
            await peer.send_all(b"SET greeting hello world\n")
            assert await peer.receive_until(b"\r\n") == b"OK"
            await peer.send_all(b"GET greeting\r\n")
            assert await peer.receive_until(b"\r\n") == b"VALUE hello world"
            await peer.send_all(b"GET nothing\n")
            assert await peer.receive_until(b"\r\n") == b"NOT_FOUND"
            await peer.send_all(b"QUIT\n")
            assert await peer.receive_all_until_eof() == b"BYE\r\n"
        assert store == {b"greeting": b"hello world"}


async def test_every_split_gives_the_same_transcript(make_server: MakeServer) -> None:
    with trio.fail_after(20):
        for chunks in every_split(SCRIPT):
            assert await exchange(make_server({}), chunks) == TRANSCRIPT, chunks


async def test_byte_by_byte_gives_the_same_transcript(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        assert await exchange(make_server({}), byte_by_byte(SCRIPT)) == TRANSCRIPT


async def test_pipelined_commands_are_answered_in_order(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        script = b"".join(b"SET k%d %d\n" % (i, i) for i in range(200))
        script += b"".join(b"GET k%d\n" % i for i in range(200))
        expected = b"OK\r\n" * 200 + b"".join(b"VALUE %d\r\n" % i for i in range(200))
        assert await exchange(make_server({}), script) == expected


async def test_input_after_quit_is_not_processed(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        store: Store = {}
        assert await exchange(make_server(store), b"QUIT\nSET a 1\n") == b"BYE\r\n"
        assert store == {}


async def test_errors_are_replies_not_disconnections(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        script = b"FLY away\n\nSET onlykey\nGET\nGET a b\nDEL\nget x\n"
        assert await exchange(make_server({}), script) == (
            b"ERR unknown command FLY\r\n"
            b"ERR empty line\r\n"
            b"ERR usage: SET key value\r\n"
            b"ERR usage: GET key\r\n"
            b"ERR usage: GET key\r\n"
            b"ERR usage: DEL key\r\n"
            b"NOT_FOUND\r\n"
        )


async def test_a_last_line_without_line_end_is_dropped(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        store: Store = {}
        assert await exchange(make_server(store), b"SET a 1\nSET b 2") == b"OK\r\n"
        assert store == {b"a": b"1"}


async def test_a_line_over_the_limit_closes_the_connection(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        assert await exchange(make_server({}), b"SET a " + b"x" * (MAX_LINE - 6) + b"\n") == (
            b"OK\r\n"
        )
        with pytest.raises(FrameTooLongError, match=f"more than {MAX_LINE} bytes"):
            await exchange(make_server({}), b"SET a " + b"x" * MAX_LINE + b"\n")


async def test_connections_share_the_store(make_server: MakeServer) -> None:
    with trio.fail_after(5):
        store: Store = {}
        async with open_peer(make_server(store)) as first, open_peer(make_server(store)) as second:
            await first.send_all(b"SET shared yes\n")
            assert await first.receive_until(b"\r\n") == b"OK"
            await second.send_all(b"GET shared\n")
            assert await second.receive_until(b"\r\n") == b"VALUE yes"


def test_execute_is_the_protocol() -> None:
    store: Store = {}
    assert execute(store, b"set k v w") == (b"OK\r\n", False)
    assert store == {b"k": b"v w"}
    assert execute(store, b"  GET k  ") == (b"VALUE v w\r\n", False)
    assert execute(store, b"quit") == (b"BYE\r\n", True)
    assert execute(store, b"X" * 100)[0] == b"ERR unknown command " + b"X" * 32 + b"\r\n"

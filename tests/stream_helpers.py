"""Small stream helpers shared by the handler tests (a module, not a test file)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything *stream* delivers until its EOF."""
    out = bytearray()
    while data := await stream.receive_some():
        out += data
    return bytes(out)


def stalled_pair() -> tuple[trio.StapledStream[Any, Any], trio.StapledStream[Any, Any]]:
    """(client, server): input to the server is buffered without limit, but the server's writes
    wait until the client reads them (a client that never reads stalls them for good)."""
    to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
    to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()
    client = trio.StapledStream(to_server_send, to_client_receive)
    server = trio.StapledStream(to_client_send, to_server_receive)
    return client, server

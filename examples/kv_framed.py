r"""A tiny key-value store over a line protocol, written as a task using ``FramedStream``.

This is the *pull* style: the task asks for the next line with ``await``, the way most trio code
reads. ``kv_chat.py`` implements the same protocol in asynchat's callback style, and
``tests/test_examples_kv.py`` runs one test suite against both; the command logic
(``execute``) is the same function, so what differs is only how bytes become lines.

The protocol (see ``kv_chat.py`` for the full table)::

    SET key value -> OK;  GET key -> VALUE value | NOT_FOUND;  DEL key -> DELETED | NOT_FOUND;
    QUIT -> BYE, then close;  anything else -> ERR reason

Try it::

    python examples/kv_framed.py 8766        # then: nc 127.0.0.1 8766
"""

from __future__ import annotations

import functools
import logging
import sys

import trio
from kv_chat import LINE_ENDINGS, MAX_LINE, execute

import trio_chat

logger = logging.getLogger("kv_framed")


async def kv_session(stream: trio.abc.Stream, *, store: dict[bytes, bytes]) -> None:
    """Serve one connection until QUIT or the end of its input.

    Raises:
        trio_chat.FrameTooLongError: a line was longer than ``MAX_LINE`` (as ``KVChat``).
    """
    framed = trio_chat.FramedStream(stream, max_bytes=MAX_LINE)
    try:
        # frames() ends quietly when the client closes between two lines.
        async for line in framed.frames(LINE_ENDINGS):
            reply, hang_up = execute(store, line)
            # Sending waits for the peer to take the bytes: a client that never reads stops
            # this task here, so replies cannot pile up in memory (backpressure for free).
            await framed.send_all(reply)
            if hang_up:
                return
    except trio_chat.IncompleteFrameError:
        # A last line without its line end is not a command (KVChat never sees its terminator
        # either): drop it, like asynchat does.
        pass


async def main(port: int) -> None:
    store: dict[bytes, bytes] = {}
    session = functools.partial(kv_session, store=store)

    async def handle(stream: trio.SocketStream) -> None:
        # trio.serve_tcp lets one connection's exception crash the whole server: keep it here.
        try:
            async with stream:
                await session(stream)
        except (trio_chat.FrameTooLongError, trio.BrokenResourceError) as exc:
            logger.warning("closing a connection: %s", exc)

    await trio.serve_tcp(handle, port, host="127.0.0.1")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8766)

r"""Length-prefixed messages: a decimal length and ``\n``, then exactly that many bytes.

::

    5\nhello            the message b"hello"
    0\n                 the empty message
    11\nline\nbreak!    a body may hold any bytes, newlines included

The server answers each message with a message in the same framing: the body in upper case.
A header that is not a number, or announces more than ``MAX_MESSAGE`` bytes, closes the
connection (a warning is logged): after it, nothing in the stream can be trusted to be a header.

Two implementations of the same server: ``LengthPrefixedChat`` (``AsyncChat``: a ``b"\n"``
terminator for the header, then an int terminator for the body) and ``length_prefixed_session``
(``FramedStream``: ``receive_until``, then ``receive_exactly``). ``tests/test_howto_framing.py``
runs one test suite against both. Try it::

    python examples/howto/length_prefixed.py 8770
    printf '5\nhello0\n' | nc 127.0.0.1 8770          # 5\nHELLO0\n
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

logger: Final = logging.getLogger("length_prefixed")

# The largest body a peer may announce. An int terminator is not limited by max_frame_size (it
# is not searched for: the peer said how long the frame is), so the header is checked against
# this before the body is read. 1 MiB: a generous message, and what one connection may make
# the server hold at most.
MAX_MESSAGE: Final = 1024 * 1024

# The longest header: the digits of MAX_MESSAGE. Any longer header is too large a number (or
# not a number), so the frame limit of the header search is that many bytes.
MAX_HEADER: Final = len(str(MAX_MESSAGE))


def frame(body: bytes) -> bytes:
    """*body* with its length header."""
    return b"%d\n%s" % (len(body), body)


def parse_length(header: bytes) -> int:
    """The body length a header announces.

    Raises:
        ValueError: the header is not a decimal number, or it is larger than ``MAX_MESSAGE``.
    """
    # bytes.isdigit() accepts ASCII digits only: no sign, no spaces, no underscores (which int()
    # would all accept).
    if not header.isdigit():
        raise ValueError(f"bad length header {header[:20]!r}: expected decimal digits")
    length = int(header)
    if length > MAX_MESSAGE:
        raise ValueError(f"a {length}-byte message is larger than MAX_MESSAGE={MAX_MESSAGE}")
    return length


def answer(body: bytes) -> bytes:
    """What the server replies to one message (framing aside)."""
    return body.upper()


class LengthPrefixedChat(trio_chat.AsyncChat):
    """One connection: a header line, then a body of the length it announced, and again."""

    # The header is read with a bytes terminator: max_frame_size bounds it.
    max_frame_size = MAX_HEADER

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self._pieces: list[bytes] = []
        self._reading_header = True
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        data = b"".join(self._pieces)
        self._pieces.clear()
        if not self._reading_header:
            self.push(frame(answer(data)))
            self._reading_header = True
            self.set_terminator(b"\n")  # applies at once to bytes already received
            return
        try:
            length = parse_length(data)
        except ValueError as exc:
            logger.warning("closing connection to %s: %s", self.peer, exc)
            # Not close(), which would drop the replies still queued: send them, then close,
            # reading nothing more (as length_prefixed_session does).
            self.close_when_done()
            return
        if length == 0:
            # set_terminator(0) would act as None ("everything from now on"), as in asynchat:
            # the empty message is complete already.
            self.push(frame(answer(b"")))
            return
        self._reading_header = False
        self.set_terminator(length)


async def length_prefixed_session(stream: trio.abc.Stream) -> None:
    """The same server as ``LengthPrefixedChat``, in the pull style; one connection.

    Raises:
        trio_chat.FrameTooLongError: a header was longer than ``MAX_HEADER`` (as
            ``LengthPrefixedChat``).
    """
    framed = trio_chat.FramedStream(stream, max_bytes=MAX_HEADER)
    try:
        async for header in framed.frames(b"\n"):  # ends when the input ends between messages
            try:
                length = parse_length(header)
            except ValueError as exc:
                logger.warning("closing a connection: %s", exc)
                return
            body = await framed.receive_exactly(length)  # 0 returns b""
            await framed.send_all(frame(answer(body)))
    except trio_chat.IncompleteFrameError:
        # The input ended inside a message: drop it (LengthPrefixedChat never sees its
        # terminator either).
        pass


async def main(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``LengthPrefixedChat`` on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            serve = partial(trio_chat.serve_tcp, LengthPrefixedChat, port, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"length-prefixed upper-case server on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8770)

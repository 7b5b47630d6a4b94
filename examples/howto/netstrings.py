r"""Netstrings (https://cr.yp.to/proto/netstrings.txt): ``5:hello,`` is the string b"hello".

A netstring is the length in decimal digits, ``:``, the bytes, and ``,``. The length has no
leading zeros (``0:,`` is the empty string), and the comma lets a reader check that the length
was right. The server answers each netstring with a netstring: its bytes in upper case. A
malformed one closes the connection (a warning is logged), as the format says it must.

Two implementations: ``NetstringChat`` (``AsyncChat``: terminator ``b":"``, then the count
*length + 1*, which takes the comma too) and ``netstring_session`` (``FramedStream``).
``tests/test_howto_framing.py`` runs one test suite against both. Try it::

    python examples/howto/netstrings.py 8771
    printf '5:hello,0:,' | nc 127.0.0.1 8771          # 5:HELLO,0:,
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

logger: Final = logging.getLogger("netstrings")

# The largest string a peer may send; the length is checked before the bytes are read (a count
# terminator is not limited by max_frame_size). 1 MiB, as in length_prefixed.py.
MAX_STRING: Final = 1024 * 1024

# The longest length field: the digits of MAX_STRING (the format allows no leading zeros).
MAX_LENGTH_DIGITS: Final = len(str(MAX_STRING))


def netstring(data: bytes) -> bytes:
    """*data* as a netstring."""
    return b"%d:%s," % (len(data), data)


def parse_length(field: bytes) -> int:
    """The length a netstring's length field gives.

    Raises:
        ValueError: not decimal digits, a leading zero, or larger than ``MAX_STRING``.
    """
    if not field.isdigit():  # ASCII digits only: no sign, no spaces
        raise ValueError(f"bad netstring length {field[:20]!r}: expected decimal digits")
    if field.startswith(b"0") and field != b"0":
        raise ValueError(f"bad netstring length {field[:20]!r}: leading zeros are not allowed")
    length = int(field)
    if length > MAX_STRING:
        raise ValueError(f"a {length}-byte netstring is larger than MAX_STRING={MAX_STRING}")
    return length


def answer(data: bytes) -> bytes:
    """What the server replies to one string (framing aside)."""
    return data.upper()


class NetstringChat(trio_chat.AsyncChat):
    """One connection: netstrings in, netstrings out."""

    # The length field is read with a bytes terminator: max_frame_size bounds it.
    max_frame_size = MAX_LENGTH_DIGITS

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self._pieces: list[bytes] = []
        self._reading_length = True
        self.set_terminator(b":")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        data = b"".join(self._pieces)
        self._pieces.clear()
        if self._reading_length:
            try:
                length = parse_length(data)
            except ValueError as exc:
                self.protocol_error(str(exc))
                return
            # The string and its comma: never 0 (which would act as None), even for "0:,".
            self._reading_length = False
            self.set_terminator(length + 1)
            return
        if not data.endswith(b","):
            self.protocol_error(f"netstring ends with {data[-1:]!r}, not b','")
            return
        self.push(netstring(answer(data[:-1])))
        self._reading_length = True
        self.set_terminator(b":")  # applies at once to bytes already received

    def protocol_error(self, reason: str) -> None:
        logger.warning("closing connection to %s: %s", self.peer, reason)
        # Not close(), which would drop the replies still queued: send them, then close,
        # reading nothing more (as netstring_session does).
        self.close_when_done()


async def netstring_session(stream: trio.abc.Stream) -> None:
    """The same server as ``NetstringChat``, in the pull style; one connection.

    Raises:
        trio_chat.FrameTooLongError: a length field was longer than ``MAX_LENGTH_DIGITS`` (as
            ``NetstringChat``).
    """
    framed = trio_chat.FramedStream(stream, max_bytes=MAX_LENGTH_DIGITS)
    try:
        async for field in framed.frames(b":"):  # ends when the input ends between netstrings
            try:
                length = parse_length(field)
            except ValueError as exc:
                logger.warning("closing a connection: %s", exc)
                return
            data = await framed.receive_exactly(length + 1)
            if not data.endswith(b","):
                logger.warning("closing a connection: netstring ends with %r", data[-1:])
                return
            await framed.send_all(netstring(answer(data[:-1])))
    except trio_chat.IncompleteFrameError:
        pass  # the input ended inside a netstring: drop it, as NetstringChat does


async def main(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``NetstringChat`` on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            serve = partial(trio_chat.serve_tcp, NetstringChat, port, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"netstring upper-case server on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8771)

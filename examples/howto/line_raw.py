r"""Switching between line mode and raw mode: a tiny blob store.

Commands are lines (ended by ``\n``; a ``\r`` before it is ignored); blobs are raw bytes, which
may hold anything, newlines included::

    PUT name size\n<size bytes>   ->  OK\n                      raw mode for a counted body
    GET name\n                    ->  DATA size\n<size bytes>   or NOT_FOUND\n
    UPLOAD name\n<bytes ... EOF>  ->  OK size\n                 raw mode until the input ends
    QUIT\n                        ->  BYE\n

After ``UPLOAD`` (whose reply comes once the client has ended its input) and ``QUIT`` the server
closes the connection. A malformed command gets ``ERR reason\n`` and also closes it: the bytes
after a ``PUT`` that was refused are a body, and must not be read as commands.

Two implementations: ``BlobChat`` (``AsyncChat``: ``set_terminator`` with bytes, an int, None)
and ``blob_session`` (``FramedStream``: ``receive_until``, ``receive_exactly``,
``receive_some``). ``tests/test_howto_framing.py`` runs one test suite against both. Try it::

    python examples/howto/line_raw.py 8772
    printf 'PUT a 5\nhelloGET a\nQUIT\n' | nc 127.0.0.1 8772    # OK, DATA 5, hello, BYE
"""

from __future__ import annotations

import signal
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

# A command line: a verb, a name and a size. 256 bytes leave room for long names and stop a
# peer that never sends a newline early (FrameTooLongError).
MAX_LINE: Final = 256

# The largest blob. Neither a count terminator nor "everything until EOF" is limited by
# max_frame_size, so both modes check this themselves. 1 MiB per connection at most.
MAX_BLOB: Final = 1024 * 1024

# The arguments each command takes.
ARGUMENTS: Final = {b"PUT": 2, b"GET": 1, b"UPLOAD": 1, b"QUIT": 0}


def parse_command(line: bytes) -> tuple[bytes, bytes, int]:
    """(verb, name, size) of a command line; *size* is a ``PUT``'s, else 0.

    Raises:
        ValueError: the line is not a well-formed command (the message says why).
    """
    verb, *args = line.removesuffix(b"\r").split(b" ")
    wanted = ARGUMENTS.get(verb)
    if wanted is None:
        raise ValueError(f"unknown command {verb[:20].decode('ascii', 'replace')!r}")
    if len(args) != wanted or not all(args):
        raise ValueError(f"{verb.decode()} takes {wanted} argument(s), separated by one space")
    if verb != b"PUT":
        return verb, args[0] if args else b"", 0
    if not args[1].isdigit():
        raise ValueError("PUT's size must be decimal digits")
    size = int(args[1])
    if size > MAX_BLOB:
        raise ValueError(f"a blob is at most {MAX_BLOB} bytes")
    return verb, args[0], size


def get(store: dict[bytes, bytes], name: bytes) -> bytes:
    """The reply to ``GET name``."""
    if name not in store:
        return b"NOT_FOUND\n"
    return b"DATA %d\n%s" % (len(store[name]), store[name])


def error(exc: ValueError) -> bytes:
    return f"ERR {exc}\n".encode()


class BlobChat(trio_chat.AsyncChat):
    """One connection of the blob store.

    Args:
        stream: the connection (or give it to :meth:`run`).
        store: the blobs, shared by every connection of one server.
    """

    # Lines only: a count terminator and None are not searched, so this does not apply to them.
    max_frame_size = MAX_LINE

    def __init__(
        self, stream: trio.abc.Stream | None = None, *, store: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(stream)
        self.store: dict[bytes, bytes] = {} if store is None else store
        self._pieces: list[bytes] = []
        self._blob_name: bytes | None = None  # the blob being received; None in line mode
        self._received = 0  # bytes of an UPLOAD so far
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)
        if self.get_terminator() is None:  # UPLOAD: no terminator will bound it, so count
            self._received += len(data)
            if self._received > MAX_BLOB:
                self._blob_name = None  # nothing is stored
                self._pieces.clear()
                self.push(b"ERR a blob is at most %d bytes\n" % MAX_BLOB)
                self.close_when_done()  # no more input is processed

    def found_terminator(self) -> None:
        data = b"".join(self._pieces)
        self._pieces.clear()
        if self._blob_name is not None:  # a PUT's body is complete: back to line mode
            self.store[self._blob_name] = data
            self._blob_name = None
            self.set_terminator(b"\n")  # at once: a command sent right after the body is next
            self.push(b"OK\n")
            return
        try:
            verb, name, size = parse_command(data)
        except ValueError as exc:
            self.push(error(exc))
            self.close_when_done()
            return
        if verb == b"PUT" and size == 0:
            self.store[name] = b""  # a count of 0 would act as None: nothing to wait for
            self.push(b"OK\n")
        elif verb == b"PUT":
            self._blob_name = name
            self.set_terminator(size)  # raw mode: the next *size* bytes, whatever they are
        elif verb == b"UPLOAD":
            self._blob_name = name
            self.set_terminator(None)  # raw mode: everything from here to the end of the input
        elif verb == b"GET":
            self.push(get(self.store, name))
        else:
            self.push(b"BYE\n")
            self.close_when_done()

    def handle_close(self) -> None:
        # The client ended its input. After UPLOAD that completes the blob; anywhere else it
        # ends the conversation (a PUT whose body was cut short is dropped).
        if self.get_terminator() is None and self._blob_name is not None:
            self.store[self._blob_name] = b"".join(self._pieces)
            self.push(b"OK %d\n" % self._received)
        self.close_when_done()


async def blob_session(stream: trio.abc.Stream, *, store: dict[bytes, bytes]) -> None:
    """The same server as ``BlobChat``, in the pull style; one connection.

    Raises:
        trio_chat.FrameTooLongError: a command line was longer than ``MAX_LINE`` (as
            ``BlobChat``).
    """
    framed = trio_chat.FramedStream(stream, max_bytes=MAX_LINE)
    try:
        async for line in framed.frames(b"\n"):
            try:
                verb, name, size = parse_command(line)
            except ValueError as exc:
                await framed.send_all(error(exc))
                return
            if verb == b"PUT":
                store[name] = await framed.receive_exactly(size)  # raw mode, counted
                await framed.send_all(b"OK\n")
            elif verb == b"UPLOAD":
                chunks: list[bytes] = []
                received = 0
                # Raw mode until the end: receive_some() hands over what is buffered first.
                while data := await framed.receive_some():
                    received += len(data)
                    if received > MAX_BLOB:
                        await framed.send_all(b"ERR a blob is at most %d bytes\n" % MAX_BLOB)
                        return
                    chunks.append(data)
                store[name] = b"".join(chunks)
                await framed.send_all(b"OK %d\n" % received)
                return
            elif verb == b"GET":
                await framed.send_all(get(store, name))
            else:
                await framed.send_all(b"BYE\n")
                return
    except trio_chat.IncompleteFrameError:
        pass  # the input ended inside a command or a PUT's body: drop it, as BlobChat does


async def main(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``BlobChat`` on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    store: dict[bytes, bytes] = {}  # one store, shared by every connection
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            factory = partial(BlobChat, store=store)
            # Started in the nursery, serve_tcp hands back its listeners: with port 0, the
            # system picked a free port, and the listener knows which.
            listeners = await nursery.start(
                partial(trio_chat.serve_tcp, factory, port, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            print(f"blob store on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8772)

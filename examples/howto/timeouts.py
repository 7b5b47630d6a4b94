r"""Timeouts: an idle timeout, a deadline for logging in, a time limit on slow work, and a
client that gives up.

A line protocol (``\n``; a ``\r`` before it is ignored)::

    LOGIN name     ->  OK name              within LOGIN_TIMEOUT (10 s) of connecting
    LOOKUP key     ->  VALUE value          or TIMEOUT, if the backend took longer than
                                            LOOKUP_TIMEOUT (2 s); LOGIN first
    QUIT           ->  BYE                  and the server closes

After logging in, a client that sends nothing for IDLE_TIMEOUT (60 s) is disconnected. The
backend is a stand-in: ``lookup()`` takes 5 seconds for the key ``slow``, a moment for any
other. Try it::

    python examples/howto/timeouts.py 8773
    nc 127.0.0.1 8773           # LOGIN alice, LOOKUP fast, LOOKUP slow; or wait 10 seconds
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

logger: Final = logging.getLogger("timeouts")

# Time to log in, from the connection's start, however the bytes trickle in: idle_timeout
# alone would let a client that sends one byte every 59 seconds stay forever without logging
# in. 10 seconds: a person typing at nc manages it; a scanner is gone quickly.
LOGIN_TIMEOUT: Final = 10.0

# Silence allowed after logging in: an interactive session with pauses (an hour would suit a
# chat, where people read more than they type). It also bounds how long a reply may wait for a
# client that does not read it.
IDLE_TIMEOUT: Final = 60.0

# Time for one command line, from its first byte to its newline, however steadily the bytes
# trickle in (idle_timeout alone never fires while a byte comes every few seconds). A person
# typing into nc sends the whole line at once; only a peer holding the connection open on
# purpose needs longer.
FRAME_TIMEOUT: Final = 10.0

# The most one command's work may take: a reply later than this is worth less than a quick
# TIMEOUT the client can act on.
LOOKUP_TIMEOUT: Final = 2.0

# The client's limit for a whole exchange: connecting, logging in, one lookup. More than
# LOOKUP_TIMEOUT, so the server's TIMEOUT arrives first when only the backend is slow.
CLIENT_TIMEOUT: Final = 5.0

# The stand-in backend's delays (seconds), by key.
DELAYS: Final = {b"slow": 5.0}


async def lookup(key: bytes) -> bytes:
    """A stand-in for a slow backend (a database, another service)."""
    await trio.sleep(DELAYS.get(key, 0.01))
    return key.upper()


class Lookup(trio_chat.AsyncChat):
    """One connection: ``LOGIN`` within a deadline, then ``LOOKUP``s until ``QUIT``."""

    idle_timeout: float | None = IDLE_TIMEOUT  # no progress that long: closed (logged, INFO)
    frame_timeout: float | None = FRAME_TIMEOUT  # a line not finished that long: closed (INFO)
    max_frame_size: int | None = 256  # a command line; a longer name or key is no name or key

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.user: bytes | None = None
        self.address = "?"  # the peer, for the log (a closed stream has none)
        # The whole connection runs in this scope (see run()); LOGIN lifts its deadline.
        self.login_scope = trio.CancelScope()
        self._pieces: list[bytes] = []
        self.set_terminator(b"\n")

    async def run(self, stream: trio.abc.Stream | None = None) -> None:
        self.login_scope.deadline = trio.current_time() + LOGIN_TIMEOUT
        with self.login_scope:
            await super().run(stream)  # cancelled at the deadline: closes the connection
        if self.login_scope.cancelled_caught:
            logger.info("closed %s: no LOGIN within %s seconds", self.address, LOGIN_TIMEOUT)

    def handle_connect(self) -> None:
        self.address = self.peer

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    async def found_terminator(self) -> None:
        line = b"".join(self._pieces).removesuffix(b"\r")
        self._pieces.clear()
        verb, _, argument = line.partition(b" ")
        if verb == b"LOGIN" and argument:
            self.user = argument
            self.login_scope.deadline = math.inf  # from now on, only idle_timeout applies
            self.push(b"OK " + argument + b"\n")
        elif verb == b"LOOKUP" and self.user is None:
            self.push(b"ERR LOGIN first\n")
        elif verb == b"LOOKUP":
            # While a hook awaits, this connection reads nothing (and idle_timeout, which
            # bounds waiting for input, does not run): the hook bounds its own work.
            value = None
            with trio.move_on_after(LOOKUP_TIMEOUT):
                value = await lookup(argument)
            self.push(b"TIMEOUT\n" if value is None else b"VALUE " + value + b"\n")
        elif verb == b"QUIT":
            self.push(b"BYE\n")
            self.close_when_done()
        else:
            self.push(b"ERR commands: LOGIN name, LOOKUP key, QUIT\n")


async def fetch(host: str, port: int, user: bytes, key: bytes) -> bytes:
    """Log in as *user*, look *key* up, quit; return the reply to the lookup.

    Raises:
        trio.TooSlowError: the whole exchange took more than ``CLIENT_TIMEOUT`` seconds.
        OSError: the connection could not be opened.
        trio.EndOfChannel, trio_chat.IncompleteFrameError: the server closed early.
    """
    # One deadline for everything, connecting included: trio has no separate connect timeout,
    # and needs none.
    with trio.fail_after(CLIENT_TIMEOUT):
        stream = await trio.open_tcp_stream(host, port)
        async with trio_chat.FramedStream(stream, max_bytes=1024) as server:
            await server.send_all(b"LOGIN %s\nLOOKUP %s\nQUIT\n" % (user, key))
            await server.receive_until(b"\n")  # OK user
            reply = await server.receive_until(b"\n")
            await server.receive_until(b"\n")  # BYE
            return reply


async def main(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``Lookup`` on 127.0.0.1:*port* (0: any free port) until Ctrl-C.

    ``task_status.started()`` gets the port.
    """
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            serve = partial(trio_chat.serve_tcp, Lookup, port, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"lookup server on 127.0.0.1:{port}", flush=True)
            task_status.started(port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()  # the server and every connection
    print("stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8773)

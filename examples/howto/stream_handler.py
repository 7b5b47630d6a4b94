r"""Serve a trio-style handler: ``async def handler(stream)`` with FramedStream, on serve_tcp.

Code written for :func:`trio.serve_tcp` (a coroutine that reads its stream with ``await``)
gets trio_chat's serving around it unchanged: one connection's exception is logged instead of
crashing the server, the connection limits, TLS, idle_timeout and the graceful shutdown.
A line protocol: each line comes back in capitals; ``QUIT`` ends the connection. Try it::

    python examples/howto/stream_handler.py 8774
    nc 127.0.0.1 8774
"""

from __future__ import annotations

import signal
import sys
from functools import partial
from typing import Final

import trio

import trio_chat

# A line may take this long from its first byte to its newline: against peers that trickle
# bytes to hold a connection (FramedStream.frame_timeout; AsyncChat has the same attribute).
LINE_TIMEOUT: Final = 10.0
# Waiting for the peer (to send, or to read a reply) this long closes the connection: serving
# bounds each wait on the stream it hands the handler.
IDLE_TIMEOUT: Final = 60.0


async def shout(stream: trio.abc.Stream, shutdown: trio.Event) -> None:
    """One connection: read lines, answer each in capitals, until QUIT or the shutdown."""
    framed = trio_chat.FramedStream(stream, max_bytes=4096)
    framed.frame_timeout = LINE_TIMEOUT
    async with trio.open_nursery() as nursery:

        async def goodbye_on_shutdown() -> None:
            # serve_tcp cancels a trio-style handler only when the grace period is over:
            # watching the same event lets it finish early, and politely.
            await shutdown.wait()
            await framed.send_all(b"server shutting down, bye\n")
            nursery.cancel_scope.cancel()

        nursery.start_soon(goodbye_on_shutdown)
        async for line in framed.frames(b"\n"):
            if line.rstrip(b"\r") == b"QUIT":
                await framed.send_all(b"BYE\n")
                break
            await framed.send_all(line.upper() + b"\n")
        nursery.cancel_scope.cancel()
    # Returning is enough: serving closes the stream (reading what the peer still sends first,
    # so that the close is no reset).


async def main(
    port: int,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1:*port* until *shutdown* is set, then shut down gracefully."""
    async with trio.open_nursery() as nursery:
        serve = partial(
            trio_chat.serve_tcp,
            partial(shout, shutdown=shutdown),
            port,
            host="127.0.0.1",
            idle_timeout=IDLE_TIMEOUT,
            shutdown_event=shutdown,
        )
        listeners = await nursery.start(serve)
        task_status.started(listeners[0].socket.getsockname()[1])


async def run(port: int) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(main, port, shutdown)
            print(f"shouting on 127.0.0.1:{port}", flush=True)
            async for _ in signals:
                shutdown.set()  # main() returns once every connection has closed
                break
    print("stopped", flush=True)


if __name__ == "__main__":
    trio.run(run, int(sys.argv[1]) if len(sys.argv) > 1 else 8774)

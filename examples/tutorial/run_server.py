"""The few lines every tutorial step shares: serve a handler on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from functools import partial

import trio

import trio_chat


async def serve(
    handler_factory: trio_chat.HandlerFactory,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1:*port* until cancelled; ``task_status.started()`` gets the port."""
    async with trio.open_nursery() as nursery:
        serve_tcp = partial(trio_chat.serve_tcp, handler_factory, port, host="127.0.0.1")
        listeners = await nursery.start(serve_tcp)
        port = listeners[0].socket.getsockname()[1]
        print(f"listening on 127.0.0.1:{port}; try: nc 127.0.0.1 {port}", flush=True)
        task_status.started(port)


async def serve_until_ctrl_c(handler_factory: trio_chat.HandlerFactory, port: int) -> None:
    """Serve until Ctrl-C. Cancelling the nursery cancels everything inside it: the server,
    every connection, each connection's receive and send loops. Then we return."""
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, handler_factory, port)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()


def main(
    handler_factory: trio_chat.HandlerFactory, about: str, argv: Sequence[str] | None = None
) -> None:
    """Parse ``--port`` and serve *handler_factory* until Ctrl-C."""
    parser = argparse.ArgumentParser(description=about)
    parser.add_argument("--port", type=int, default=7000, help="port (0: any free one)")
    args = parser.parse_args(argv)
    trio.run(serve_until_ctrl_c, handler_factory, args.port)

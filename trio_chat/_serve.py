"""Serving: run one ``AsyncChat`` per accepted connection, isolated from the others.

Mirrors ``trio.serve_tcp`` / ``trio.serve_listeners``, with one deliberate difference: an exception
in one connection's handler is logged and closes that connection only, where trio's helpers let
it crash the whole server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

import trio

from ._chat import AsyncChat
from ._util import peer_name

__all__ = ["HandlerFactory", "serve_listeners", "serve_tcp"]

logger: Final = logging.getLogger("trio_chat")

#: Makes the handler of one connection from its stream; an ``AsyncChat`` subclass qualifies.
HandlerFactory = Callable[[trio.abc.Stream], AsyncChat]


async def run_handler(handler_factory: HandlerFactory, stream: trio.abc.Stream) -> None:
    """Run one connection's handler; log its failure instead of letting it escape."""
    peer = peer_name(stream)
    try:
        handler = handler_factory(stream)
        await handler.run()
    except trio.BrokenResourceError as exc:
        logger.debug("connection from %s broken: %r", peer, exc)
    except Exception:
        logger.exception("handler for connection from %s failed; closing it", peer)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_listeners(
    handler_factory: HandlerFactory,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept connections on *listeners* forever, running ``handler_factory(stream).run()`` each.

    Like :func:`trio.serve_listeners` (``task_status.started(listeners)``, one task per
    connection, in *handler_nursery* if given).

    Warning:
        Unlike trio's, an exception from one connection's handler does not crash the server: it
        is logged on the ``trio_chat`` logger with the peer address and traceback, that connection
        is closed, and the others go on. A peer reset is logged at debug level only.
    """

    async def handle(stream: trio.abc.Stream) -> None:
        await run_handler(handler_factory, stream)

    await trio.serve_listeners(
        handle, list(listeners), handler_nursery=handler_nursery, task_status=task_status
    )


async def serve_tcp(
    handler_factory: HandlerFactory,
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on *host*:*port* (0 picks a free port) and serve forever; see :func:`serve_listeners`.

    ``task_status.started()`` receives the listeners, as from :func:`trio.serve_tcp`.
    """
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    await serve_listeners(
        handler_factory,
        listeners,
        handler_nursery=handler_nursery,
        task_status=task_status,  # type: ignore[arg-type]  # started() gets these SocketListeners
    )

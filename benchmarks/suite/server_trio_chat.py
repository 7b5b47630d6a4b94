"""trio_chat ``AsyncChat`` with the asynchat-style handler (``asynchat_hooks.py``), served by its
``serve_tcp``.

For the protocol workloads the handlers are ``RespHooks``, ``HttpHooks`` and ``SmtpHooks``:
this file is also the RESP server to re-measure after a change in the core, on its own::

    python benchmarks/suite/server_trio_chat.py --workload resp --port 6380 --cpu 1
    taskset -c 1 redis-benchmark -p 6380 -t set,get -c 50 -P 16 -q
"""

from __future__ import annotations

import contextlib
import inspect
from functools import partial
from typing import Any, Final

import trio
from asynchat_hooks import (
    ChatHooks,
    EchoHooks,
    HttpHooks,
    LineHooks,
    MessageHooks,
    RespHooks,
    SinkHooks,
    SmtpHooks,
)
from suite_common import BACKLOG, HOST, announce, server_args

from trio_chat import AsyncChat, serve_tcp


class Chat(ChatHooks, AsyncChat):
    """Sets the workload's terminator; answers EOF with the report, then closes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.setup()

    def handle_close(self) -> None:
        self.push(self.report())
        self.close_when_done()


class SinkChat(SinkHooks, Chat):
    pass


class LineChat(LineHooks, Chat):
    pass


class MessageChat(MessageHooks, Chat):
    pass


class EchoChat(EchoHooks, Chat):
    pass


class ProtocolChat(ChatHooks, AsyncChat):
    """A protocol handler: AsyncChat's own handle_close (flush, then close) at EOF."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.setup()


class RespChat(RespHooks, ProtocolChat):
    pass


class HttpChat(HttpHooks, ProtocolChat):
    pass


class SmtpChat(SmtpHooks, ProtocolChat):
    pass


CHATS: Final[dict[str, type[AsyncChat]]] = {
    "sink": SinkChat,
    "lines": LineChat,
    "framed": MessageChat,
    "echo": EchoChat,
    "resp": RespChat,
    "http": HttpChat,
    "smtp": SmtpChat,
}


def no_limits() -> dict[str, Any]:
    """Turn off serve_tcp's connection limits (W6 opens 2,000 connections from one address).

    Only the options this version of serve_tcp has, so the suite runs against older ones too.
    """
    accepted = inspect.signature(serve_tcp).parameters
    wanted = {"max_connections": None, "max_connections_per_peer": None}
    return {name: value for name, value in wanted.items() if name in accepted}


async def serve(mode: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tcp, CHATS[mode], port, host=HOST, backlog=BACKLOG, **no_limits())
        )
        announce(listeners[0].socket.getsockname()[1])


def main() -> None:
    args = server_args(__doc__ or "")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.mode, args.port)


if __name__ == "__main__":
    main()

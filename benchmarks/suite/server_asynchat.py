"""stdlib asynchat/asyncore (Python <= 3.11; ``pyasynchat``/``pyasyncore`` on 3.12+) with the
asynchat-style handler (``asynchat_hooks.py``)."""

from __future__ import annotations

import contextlib
import socket
import warnings
from typing import Any, Final

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
from suite_common import BACKLOG, HOST, announce, server_args, skip

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import asynchat
        import asyncore
    except ImportError:  # pragma: no cover - Python 3.12+ without pyasynchat
        skip("asynchat is not importable (Python 3.12+ needs `pip install pyasynchat`)")

# Any: typeshed has stubs for these modules only before 3.12.
_AsyncChat: Any = asynchat.async_chat
_Dispatcher: Any = asyncore.dispatcher


class Chat(ChatHooks, _AsyncChat):  # type: ignore[misc]
    """Sets the workload's terminator; answers EOF with the report, then closes."""

    def __init__(self, sock: socket.socket, channels: dict[int, Any]) -> None:
        super().__init__(sock, map=channels)
        self.eof = False
        self.setup()

    def readable(self) -> bool:
        # After EOF the socket stays readable forever; asyncore would call handle_close() on
        # every poll.
        return not self.eof

    def handle_close(self) -> None:
        # Called for EOF (recv() returned b"") and, after close_when_done(), once the output
        # is flushed.
        if self.eof:
            self.close()
        else:
            self.eof = True
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


class ProtocolChat(ChatHooks, _AsyncChat):  # type: ignore[misc]
    """A protocol handler: closes at EOF (asyncore's handle_close)."""

    def __init__(self, sock: socket.socket, channels: dict[int, Any]) -> None:
        # asynchat sends each push() at once, so pipelined requests get one small write per
        # reply; without TCP_NODELAY (which trio and asyncio set by default) Nagle's algorithm
        # holds the second one back until the client's delayed ACK: about 40 ms per batch.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, map=channels)
        self.setup()


class RespChat(RespHooks, ProtocolChat):
    pass


class HttpChat(HttpHooks, ProtocolChat):
    pass


class SmtpChat(SmtpHooks, ProtocolChat):
    pass


CHATS: Final[dict[str, type[Any]]] = {
    "sink": SinkChat,
    "lines": LineChat,
    "framed": MessageChat,
    "echo": EchoChat,
    "resp": RespChat,
    "http": HttpChat,
    "smtp": SmtpChat,
}


class Server(_Dispatcher):  # type: ignore[misc]
    def __init__(self, chat: type[Any], channels: dict[int, Any], port: int) -> None:
        super().__init__(map=channels)
        self.chat = chat
        self.channels = channels
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((HOST, port))
        self.listen(BACKLOG)

    def handle_accepted(self, sock: socket.socket, addr: object) -> None:
        self.chat(sock, self.channels)


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    channels: dict[int, Any] = {}
    server = Server(CHATS[args.mode], channels, args.port)
    announce(server.socket.getsockname()[1])
    with contextlib.suppress(KeyboardInterrupt):
        # poll(), not select(): W6 holds 2,000 sockets, more than select()'s FD_SETSIZE.
        asyncore.loop(timeout=30.0, use_poll=True, map=channels)


if __name__ == "__main__":
    main()

"""``python -m trio_chat``: demo servers, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial

import attrs
import trio

from ._chat import AsyncChat
from ._demo import (
    IDLE_TIMEOUT,
    MAX_QUEUED_BYTES,
    EchoHandler,
    HttpRequestHandler,
    Member,
    Room,
    TaskTreeTracer,
)
from ._serve import HandlerFactory, serve_listeners

DEFAULT_PORT = 7777


def _log(line: str) -> None:
    print(line, flush=True)


@attrs.frozen
class Demo:
    """One subcommand.

    Attributes:
        help: what the server does, for ``--help`` and the banner.
        connect: how to talk to it, for the banner: formatted with ``host``, ``port`` and
            ``url_host`` (the host, in brackets if it is an IPv6 address).
        new_factory: makes the handler factory, once per server run (state that connections
            share, such as a chat room, is created there).
    """

    help: str
    connect: str
    new_factory: Callable[[], HandlerFactory]


def _chat_room() -> HandlerFactory:
    """The members' factory for one chat room, shared by the connections of one server run."""
    room = Room()

    def member(stream: trio.abc.Stream) -> AsyncChat:
        handler = Member(stream, room)
        # What examples/chat_room.py's serve_room() passes to serve_listeners(), which sets them
        # on each handler the same way: the reasons for the numbers are next to the constants.
        handler.max_queued_bytes = MAX_QUEUED_BYTES
        handler.idle_timeout = IDLE_TIMEOUT
        return handler

    return member


DEMOS: dict[str, Demo] = {
    "echo": Demo("echoes every line you send", "nc {host} {port}", lambda: EchoHandler),
    # The chat room of examples/chat_room.py (_demo.py holds a copy that tests/test_cli.py keeps
    # identical). Ctrl-C cancels the server at once, as for the other demos, rather than the
    # example's graceful goodbye: the members see their connection close.
    "chat": Demo("a chat room: every line goes to everyone", "nc {host} {port}", _chat_room),
    "http": Demo(
        "the asynchat docs' HTTP request reader: one GET or POST per connection",
        "curl http://{url_host}:{port}/hello",
        lambda: partial(HttpRequestHandler, log=_log),
    ),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat",
        description="Demo servers for trio_chat, on 127.0.0.1 unless told otherwise.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1", help="address to listen on")
    common.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    common.add_argument(
        "--trace",
        action="store_true",
        help="print the live task tree (nurseries and tasks) as clients come and go",
    )
    sub = parser.add_subparsers(dest="demo", required=True, metavar="DEMO")
    for name, demo in DEMOS.items():
        sub.add_parser(name, help=demo.help, description=demo.help, parents=[common])
    return parser.parse_args(argv)


async def serve_demo(
    args: argparse.Namespace, served: list[int], tracer: TaskTreeTracer | None = None
) -> None:
    demo = DEMOS[args.demo]
    factory = demo.new_factory()

    def make_handler(stream: trio.abc.Stream) -> AsyncChat:
        # Called in the connection's own task, which is where the receive loop will run.
        served[0] += 1
        handler = factory(stream)
        if tracer is not None:
            tracer.label(
                trio.lowlevel.current_task(),
                f"connection {served[0]} ({handler.peer}): run() and its receive loop",
            )
        return handler

    # SIGINT/SIGTERM cancel the server's nursery: every connection is closed, then we return.
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_listeners, make_handler, listeners))
            host, port = listeners[0].socket.getsockname()[:2]
            url_host = f"[{host}]" if ":" in host else host
            print(
                f"trio_chat {args.demo} server ({demo.help}) on {host}:{port}; "
                f"connect with: {demo.connect.format(host=host, port=port, url_host=url_host)}"
                "   (Ctrl-C stops it)",
                flush=True,
            )
            if tracer is not None:
                nursery.start_soon(tracer.run)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    served = [0]
    tracer = TaskTreeTracer(_log) if args.trace else None
    try:
        trio.run(
            partial(serve_demo, args, served, tracer),
            instruments=[tracer] if tracer is not None else [],
        )
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        print("pick another port with --port N (0 picks a free one)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    print(f"stopped; served {served[0]} connection(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

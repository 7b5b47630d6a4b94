"""``python -m trio_chat``: demo servers on 127.0.0.1."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from ._chat import AsyncChat
from ._demo import EchoHandler
from ._serve import serve_listeners

DEFAULT_PORT = 7777

DEMOS = {"echo": (EchoHandler, "echoes every line you send")}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trio_chat", description=__doc__)
    sub = parser.add_subparsers(dest="demo", required=True, metavar="DEMO")
    for name, (_, help_text) in DEMOS.items():
        demo = sub.add_parser(name, help=help_text)
        demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
        demo.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free)")
    return parser.parse_args(argv)


async def serve_demo(args: argparse.Namespace, served: list[int]) -> None:
    factory, help_text = DEMOS[args.demo]

    def make_handler(stream: trio.abc.Stream) -> AsyncChat:
        served[0] += 1
        return factory(stream)

    # SIGINT/SIGTERM cancel the server's nursery: every connection is closed, then we return.
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_listeners, make_handler, listeners))
            host, port = listeners[0].socket.getsockname()[:2]
            print(
                f"trio_chat {args.demo} server ({help_text}) on {host}:{port}; "
                f"connect with: nc {host} {port}   (Ctrl-C stops it)",
                flush=True,
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    served = [0]
    try:
        trio.run(serve_demo, args, served)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        print("pick another port with --port N (0 picks a free one)", file=sys.stderr)
        return 1
    print(f"stopped; served {served[0]} connection(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

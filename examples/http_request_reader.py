"""The asynchat documentation's HTTP request reader, ported and completed, as a program.

The handler is :mod:`trio_chat.demos.http` (installed with the package, so that
``python -m trio_chat http`` serves the same one); this program serves it on its own::

    python examples/http_request_reader.py --port 8080
    curl http://127.0.0.1:8080/hello
    curl -d 'name=trio&lang=python' http://127.0.0.1:8080/form
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from trio_chat.demos.http import serve


async def serve_until_ctrl_c(host: str, port: int) -> None:
    """Serve until Ctrl-C: cancelling the nursery closes every connection, then we return."""
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, host, port)
            print(f"serving HTTP on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
            async for _ in ctrl_c:
                nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The asynchat HTTP request reader, on trio.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    args = parser.parse_args(argv)
    trio.run(serve_until_ctrl_c, args.host, args.port)
    return 128 + signal.SIGINT  # stopped by Ctrl-C, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())

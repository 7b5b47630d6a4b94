r"""Sum ``name value`` lines until the client closes, then reply with the totals.

A bulk stream of small frames, read with ``FramedStream.receive_frames``: each call returns
every complete line already received, with one checkpoint per call instead of one per line.
``docs/howto-framed.rst`` shows it; ``tests/test_framed.py`` tests it.

Try it::

    python examples/line_totals.py 8767      # then: printf 'a 1\nb 2\na 3\n' | nc -N 127.0.0.1 8767
"""

from __future__ import annotations

import sys

import trio

import trio_chat

# 1 KiB: a name and a number fit many times over; a longer line is not this protocol.
MAX_LINE = 1024


async def sum_values(stream: trio.abc.Stream) -> None:
    """Read ``name value`` lines until the end of the input; reply ``name total`` lines.

    Raises:
        trio_chat.FrameTooLongError: a line was longer than ``MAX_LINE``.
        trio_chat.IncompleteFrameError: the input ended in the middle of a line.
        ValueError: a value was not an integer.
    """
    framed = trio_chat.FramedStream(stream, max_bytes=MAX_LINE)
    totals: dict[bytes, int] = {}
    try:
        while True:
            # Every complete line received so far: one call, one checkpoint, many lines.
            for line in await framed.receive_frames(b"\n"):
                name, _, value = line.partition(b" ")
                totals[name] = totals.get(name, 0) + int(value)
    except trio.EndOfChannel:
        pass  # the client closed between two lines
    await framed.send_all(b"".join(b"%s %d\n" % item for item in sorted(totals.items())))


async def main(port: int) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        # trio.serve_tcp lets one connection's exception crash the whole server: keep it here.
        try:
            await sum_values(stream)
        except (trio_chat.FrameTooLongError, trio_chat.IncompleteFrameError, ValueError):
            pass  # a client that breaks the protocol loses its connection, nothing else
        except trio.BrokenResourceError:
            pass  # it closed before reading the totals
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_tcp(handle, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8767)

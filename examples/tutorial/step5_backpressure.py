"""Tutorial step 5: backpressure, watched in memory (no network and no clock involved).

A client sends 64 lines of 1,000 bytes to step 2's server and does not read the replies. Run it::

    python examples/tutorial/step5_backpressure.py
"""

from __future__ import annotations

import trio
import trio.testing
from step2_lines import Upper

LINES = 64
LINE = b"x" * 999 + b"\n"


class WatchedUpper(Upper):
    """Step 2's server with a small high-water mark, remembering its largest backlog."""

    out_high_water = 16 * 1024  # the default is 256 KiB; a small one shows the effect sooner

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.lines_read = 0
        self.peak = 0

    def found_terminator(self) -> None:
        super().found_terminator()
        self.lines_read += 1
        self.peak = max(self.peak, self.queued_bytes)


async def experiment() -> None:
    # A lockstep stream has no buffer at all: send_all() returns only once the other side has
    # received everything. (A TCP connection behaves the same once the kernel's buffers are full.)
    client, server = trio.testing.lockstep_stream_pair()
    handler = WatchedUpper(server)
    sent = 0

    async def send_lines() -> None:
        nonlocal sent
        for _ in range(LINES):
            await client.send_all(LINE)
            sent += 1
        await client.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler.run)
        nursery.start_soon(send_lines)
        # Wait until every task is blocked: the flow has stopped.
        await trio.testing.wait_all_tasks_blocked()
        print(f"The client sent {sent} of {LINES} lines and waits in send_all().")
        print(f"The server read {handler.lines_read} lines and stopped reading:")
        print(
            f"{handler.queued_bytes:,} bytes of replies wait to be sent, more than"
            f" out_high_water = {handler.out_high_water:,}."
        )
        replies = 0
        while data := await client.receive_some():
            replies += data.count(b"\n")
        print(f"The client read: all {replies} replies arrived, and the server")
        print(f"never held more than {handler.peak:,} bytes of them.")


if __name__ == "__main__":
    trio.run(experiment)

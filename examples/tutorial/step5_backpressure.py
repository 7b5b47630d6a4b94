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
    """Step 2's server, counting the lines it read and remembering its largest backlog."""

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
        print(f"The server read {handler.lines_read} line(s) and stopped reading: its receive loop")
        print(f"waits in send_all() with {handler.queued_bytes:,} bytes of replies.")
        replies = 0
        while data := await client.receive_some():
            replies += data.count(b"\n")
        print(f"The client read: all {replies} replies arrived, and the server")
        print(f"never held more than {handler.peak:,} bytes of them.")


if __name__ == "__main__":
    trio.run(experiment)

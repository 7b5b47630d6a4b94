"""CPU instructions per request of trio_chat's drivers, counted by valgrind (callgrind).

Wall-clock figures on a shared 2-vCPU machine move by 2-4x between runs; an instruction count
does not: the same code, input and interpreter give the same count whatever else the machine
is doing. Each workload runs a server handler in process over a stream that hands it the same
bytes on every read and takes every write at once (no sockets, no syscalls), so what is
counted is the handler's own Python work, trio's scheduling included: the cost a server pays
per request on top of the kernel's.

    python benchmarks/bench_instructions.py                 # trio_chat as in this checkout
    python benchmarks/bench_instructions.py --tree /tmp/old # another copy of trio_chat/
    python benchmarks/bench_instructions.py --run WORKLOAD DRIVER N  # what valgrind runs

Workloads (the handlers are the benchmark suite's, ``benchmarks/suite``):

* ``resp16`` / ``resp1``: RESP SETs, 16 per read / one per read: ``AsyncChat``
  (``RespChat``), ``FramedStream`` and raw trio (``server_raw_trio.resp``);
* ``rt``: 32-byte lines echoed one per read (the W4 round trip), ``AsyncChat`` and raw trio;
* ``lines`` / ``echo``: 64 KiB reads of 32-byte lines, counted / echoed (W1 / pipelined W4).

Results: ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "suite"))

SET = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nxxx\r\n"
LINE = b"x" * 31 + b"\n"
LINES_PER_READ = 2048  # 64 KiB of 32-byte lines

# (mode, data of one read, requests per read, reads for the counted run)
WORKLOADS: dict[str, tuple[bytes, int, int]] = {
    "resp16": (SET * 16, 16, 200),
    "resp1": (SET, 1, 200),
    "rt": (LINE, 1, 300),
    "lines": (LINE * LINES_PER_READ, LINES_PER_READ, 5),
    "echo": (LINE * LINES_PER_READ, LINES_PER_READ, 5),
}
DRIVERS = {
    "resp16": ["chat", "framed", "raw"],
    "resp1": ["chat", "framed", "raw"],
    "rt": ["chat", "raw"],
    "lines": ["chat"],
    "echo": ["chat"],
}


def run_once(workload: str, driver: str, reads: int) -> None:
    """Serve *reads* reads of the workload with *driver*, in this process."""
    import trio

    data = WORKLOADS[workload][0]

    class Replay(trio.abc.HalfCloseableStream):
        """Hands out *data* on every read, *reads* times, then EOF; takes every write."""

        def __init__(self) -> None:
            self.left = reads

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            if not self.left:
                return b""
            self.left -= 1
            return data

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.lowlevel.checkpoint()

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def send_eof(self) -> None:
            await trio.lowlevel.checkpoint()

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        import server_framed
        import server_raw_trio
        import server_trio_chat

        from trio_chat import FramedStream

        handler: Callable[[], Awaitable[Any]]
        if driver == "framed":
            handler = lambda: server_framed.resp(FramedStream(Replay()))  # noqa: E731
        elif driver == "raw":
            raw = server_raw_trio.resp if workload.startswith("resp") else server_raw_trio.echo
            handler = lambda: raw(Replay())  # type: ignore[arg-type]  # noqa: E731
        else:
            name = (
                "resp" if workload.startswith("resp") else "echo" if workload == "rt" else workload
            )
            handler = server_trio_chat.CHATS[name](Replay()).run
        await handler()

    trio.run(main)


def count(tree: Path, workload: str, driver: str, reads: int) -> int:
    """Instructions of one run under callgrind (the interpreter's start-up included)."""
    # A fixed hash seed: dict and set work depends on it, by a few percent between runs.
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE / 'suite'}", PYTHONHASHSEED="0")
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--run", workload, driver, str(reads)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="holds trio_chat/")
    parser.add_argument("--run", nargs=3, metavar=("WORKLOAD", "DRIVER", "READS"))
    args = parser.parse_args()
    if args.run:
        workload, driver, reads = args.run
        run_once(workload, driver, int(reads))
        return
    print(f"trio_chat from {args.tree}; instructions per request (per line for lines/echo)")
    for workload, (_, per_read, reads) in WORKLOADS.items():
        for driver in DRIVERS[workload]:
            # The run with no reads is the baseline: start-up, imports, trio.run itself.
            base = count(args.tree, workload, driver, 0)
            total = count(args.tree, workload, driver, reads)
            print(f"{workload:8} {driver:7} {round((total - base) / (reads * per_read)):>9,}")


if __name__ == "__main__":
    main()

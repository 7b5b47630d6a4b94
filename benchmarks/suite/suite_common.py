"""What the suite's processes share: the workloads, their wire format, and server start-up.

Imported by the orchestrator (``run_suite.py``), the load generator (``loadgen.py``) and every
``server_*.py``. It imports nothing but the standard library, so every server pays the same
start-up cost for it.

Wire format (the load generator only ever writes, except for the echo workloads):

* W0 (sink): the W1 bytes; the server counts bytes only.
* W1 / W2: lines of ``LINE_SIZES[w]`` bytes including ``b"\\n"``.
* W3: messages, each ``b"%d\\n" % len(payload)`` then ``payload`` (a count terminator).
* W4 / W5 / W6: 64-byte lines (63 bytes + ``b"\\n"``), each echoed back as is.

When its input ends (EOF), every server answers with one report line,
``b"%d %d\\n" % (frames, payload_bytes)``, and closes: frames are lines or messages (for the sink:
reads, not checked), payload bytes exclude terminators and headers. The load generator checks the
report against what it sent, so a server that drops or merges frames fails the run.

The protocol workloads (``PROTOCOL_WORKLOADS``: RESP, HTTP/1.1, SMTP) are real protocols, whose
rules live in ``protocols.py``; real clients drive them (``redis-benchmark``, ``ab``,
``smtplib``), and ``checks.py`` verifies each server before it is timed.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
from typing import Final, NoReturn

WORKLOADS: Final = ("W0", "W1", "W2", "W3", "W4", "W5", "W6")
#: Real protocols driven by real clients; each server runs one of these as its mode.
PROTOCOL_WORKLOADS: Final = ("resp", "http", "smtp")

#: What each workload measures, for tables and help texts.
TITLES: Final = {
    "W0": "sink, 32-byte lines",
    "W1": "32-byte lines",
    "W2": "1 KiB lines",
    "W3": "64 KiB messages",
    "W4": "echo, 1 connection",
    "W5": "echo, 100 connections",
    "W6": "idle connections",
}

#: The unit of each workload's figure; W6 is the only one where lower is better.
UNITS: Final = {
    "W0": "lines/s",
    "W1": "lines/s",
    "W2": "lines/s",
    "W3": "MB/s",
    "W4": "rt/s",
    "W5": "rt/s",
    "W6": "KiB/conn",
}

#: The handler mode each workload needs on the server side.
MODES: Final = {
    "W0": "sink",
    "W1": "lines",
    "W2": "lines",
    "W3": "framed",
    "W4": "echo",
    "W5": "echo",
    "W6": "echo",
    "resp": "resp",
    "http": "http",
    "smtp": "smtp",
}

LINE_SIZES: Final = {"W0": 32, "W1": 32, "W2": 1024}
MESSAGE_SIZE: Final = 64 * 1024
ECHO_LINE: Final = b"%063d" % 0
ECHO_LINE_SIZE: Final = 64
assert len(ECHO_LINE + b"\n") == ECHO_LINE_SIZE

# Every read asks for at most 64 KiB, the size asynchat, trio_chat and anyio use by default and
# what one loopback read typically returns; the servers that take a size all get this one.
READ_SIZE: Final = 65536
# 64 KiB: the longest line any workload sends is 1 KiB, so this limit (where a server needs one)
# only refuses garbage.
MAX_LINE: Final = 65536
# The W6 connections plus headroom for the listener, stdio and the interpreter's own files.
NOFILE_WANTED: Final = 4096
# Listen backlog: the load generator connects up to 2,000 times in a row (W6) and 100 at once
# (W5); the kernel caps it at net.core.somaxconn anyway.
BACKLOG: Final = 4096
HOST: Final = "127.0.0.1"
# Exit status of a server whose peer library is not installed (or not written yet): the
# orchestrator reports the server as skipped instead of failed.
EXIT_SKIP: Final = 3


def report(frames: int, payload_bytes: int) -> bytes:
    """The line a server sends when its input ends."""
    return b"%d %d\n" % (frames, payload_bytes)


def pin_to_cpu(cpu: int) -> None:
    """Run this process on *cpu* only (-1: leave the affinity alone)."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) that process *pid* has used so far.

    From ``/proc/<pid>/task/*/schedstat`` (nanoseconds) where the kernel keeps it, else from
    ``/proc/<pid>/stat`` (fields 14 and 15, in clock ticks of 10 ms on most kernels, too coarse
    for a short run). Threads that have exited are not counted by the first: every server here
    does its work on threads that live as long as it does.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as schedstat:
                total += int(schedstat.read().split()[0])
    except (OSError, ValueError, IndexError):
        total = 0
    if total:
        return total / 1e9
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # The command name (field 2) may hold spaces: count the fields after its ")".
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile_limit(wanted: int = NOFILE_WANTED) -> None:
    """Raise the soft RLIMIT_NOFILE to *wanted* (or the hard limit, if that is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class ServerArgs(argparse.Namespace):
    workload: str
    cpu: int
    port: int
    uvloop: bool

    @property
    def mode(self) -> str:
        return MODES[self.workload]


def server_args(description: str, *, uvloop_flag: bool = False) -> ServerArgs:
    """Parse a server's command line, pin it to its CPU and raise its file limit."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", choices=WORKLOADS + PROTOCOL_WORKLOADS, required=True)
    parser.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (-1: none)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    if uvloop_flag:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(namespace=ServerArgs())
    if not uvloop_flag:
        args.uvloop = False
    pin_to_cpu(args.cpu)
    raise_nofile_limit()
    # The orchestrator stops servers with SIGINT. A process started in the background inherits
    # SIGINT ignored, and then neither Python nor trio nor Twisted installs its handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return args


def announce(port: int) -> None:
    """Tell the orchestrator the server listens (the first line it reads from stdout)."""
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def skip(reason: str) -> NoReturn:
    """Tell the orchestrator this server cannot run here, and exit."""
    sys.stdout.write(f"SKIP {reason}\n")
    sys.stdout.flush()
    sys.exit(EXIT_SKIP)

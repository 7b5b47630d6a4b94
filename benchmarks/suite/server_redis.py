"""redis-server itself (the roof for the RESP workload): this process becomes redis-server.

It picks a free port, announces it, then replaces itself with ``redis-server`` (same process id,
so the orchestrator's CPU accounting and its SIGINT reach redis-server), without persistence and
with logging to /dev/null. The orchestrator waits until the port accepts connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

from suite_common import HOST, announce, server_args, skip


def free_port() -> int:
    # Another process could take the port before redis-server binds it; on a benchmark machine
    # nothing else is binding ports, and the orchestrator fails the run if the server is not there.
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    args = server_args(__doc__.splitlines()[0] if __doc__ else "")
    if args.workload != "resp":
        skip("redis-server speaks only RESP")
    redis = shutil.which("redis-server")
    if redis is None:
        skip("redis-server is not installed (`apt-get install redis-server`)")
    port = args.port or free_port()
    announce(port)
    sys.stdout.flush()
    # --io-threads 1: every request on one thread, as in the Python servers (the default too).
    os.execv(
        redis,
        [
            *(redis, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--protected-mode", "no", "--daemonize", "no", "--io-threads", "1"),
            *("--logfile", "/dev/null", "--loglevel", "warning", "--databases", "1"),
        ],
    )


if __name__ == "__main__":
    main()

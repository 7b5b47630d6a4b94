"""``python -m trio_chat``: the demo servers of :mod:`trio_chat.demos`, on 127.0.0.1 by default.

The command line lives here rather than in ``__main__.py`` so that ``--workers`` processes
(started with multiprocessing's "spawn") can import what they run.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import attrs
import trio

from ._chat import AsyncChat
from ._reuseport import open_tcp_listeners_reuseport
from ._serve import DEFAULT_GRACE_PERIOD, HandlerFactory, serve_listeners
from ._serve_stream import describe_peer
from ._workers import Worker, WorkerCrashError, run_workers
from .demos import chat_room
from .demos.echo import EchoHandler
from .demos.http import HttpRequestHandler
from .demos.tasktree import TaskTreeTracer

DEFAULT_PORT = 7777
DEFAULT_HOST = "127.0.0.1"
# A shell reports a program that Ctrl-C stopped as 128 + SIGINT; so do we, having stopped on it.
EXIT_CTRL_C = 128 + signal.SIGINT

# A host name as a resolver accepts it (RFC 1123 labels), for a message before anything is bound.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _log(line: str) -> None:
    # One write for the line and its newline: print() writes them separately when stdout is
    # unbuffered (PYTHONUNBUFFERED), and the lines of two workers sharing a pipe interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_ServedContext = AbstractAsyncContextManager["Served"]


@attrs.frozen
class Served:
    """What one run of a demo serves.

    Attributes:
        factory: makes each connection's handler.
        options: the :func:`~trio_chat.serve_listeners` options the demo sets (the command
            line's flags override them).
        goodbye: called when a shutdown starts, before the connections are told to close: what
            it pushes is still sent.
    """

    factory: HandlerFactory
    options: dict[str, Any] = attrs.field(factory=dict)
    goodbye: Callable[[], object] | None = None


@contextlib.asynccontextmanager
async def _serve_chat(args: argparse.Namespace) -> AsyncIterator[Served]:
    # One room for the whole server run, shared by its connections; with --redis, shared with
    # the other processes through Redis (the room connects on entry, and leaves on exit).
    async with chat_room.open_room(args.redis, args.nick_ttl) as room:
        yield Served(
            partial(chat_room.Member, room=room),
            # What the chat room's own serve_room() passes: the reasons are by the constants.
            {
                "max_queued_bytes": chat_room.MAX_QUEUED_BYTES,
                "idle_timeout": chat_room.IDLE_TIMEOUT,
            },
            goodbye=lambda: room.close_all("the server is shutting down"),
        )


def _serving(make: Callable[[], Served]) -> Callable[[argparse.Namespace], _ServedContext]:
    """A demo without state to open or close: what it serves, as a context."""

    @contextlib.asynccontextmanager
    async def serve(args: argparse.Namespace) -> AsyncIterator[Served]:
        yield make()

    return serve


@attrs.frozen
class Demo:
    """One subcommand.

    Attributes:
        help: what the server does, for ``--help`` and the banner.
        connect: how to talk to it, for the banner: formatted with ``host`` (as a command line
            takes it) and ``url_host`` (in brackets if it is an IPv6 address), and ``port``.
        serve: opens what one server run serves, from the command line's arguments (shared
            state, such as a chat room, is opened there, and closed when the run ends).
    """

    help: str
    connect: str
    serve: Callable[[argparse.Namespace], _ServedContext]


DEMOS: dict[str, Demo] = {
    "echo": Demo(
        "echoes every line you send", "nc {host} {port}", _serving(lambda: Served(EchoHandler))
    ),
    "chat": Demo("a chat room: every line goes to everyone", "nc {host} {port}", _serve_chat),
    "http": Demo(
        "an HTTP/1.1 server: GET, HEAD and POST of forms, keep-alive",
        "curl http://{url_host}:{port}/hello",
        _serving(lambda: Served(partial(HttpRequestHandler, log=_log))),
    ),
}


# ----------------------------------------------------------------------------- arguments


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give a number from 1 to 65535, or 0 for any free port"
        )
    return port


def _host(text: str) -> str:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text  # [::1]
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        if not _HOST_NAME.fullmatch(host):
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither an IP address nor a host name: give 127.0.0.1 or ::1 "
                "(this machine only), 0.0.0.0 or :: (every IPv4 or IPv6 address), or a name "
                "such as localhost"
            ) from None
    return host


def _count_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more, or 'none'")


def _count(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")


def _max_connections(text: str) -> int | str | None:
    return "auto" if text.lower() == "auto" else _count_or_none(text)


def _seconds_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds over 0, or 'none'")
    return seconds


def _grace(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds, 0 or more")
    return seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat",
        description="Demo servers for trio_chat, on 127.0.0.1 unless told otherwise.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--host",
        action="append",
        type=_host,
        help="address to listen on (default 127.0.0.1); give it twice for two, e.g. "
        "--host 0.0.0.0 --host :: for every IPv4 and IPv6 address",
    )
    common.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port (default %(default)s; 0: any free)"
    )
    common.add_argument(
        "--trace",
        action="store_true",
        help="print the live task tree (nurseries and tasks) as clients come and go",
    )
    common.add_argument(
        "--verbose", action="store_true", help="log connections cut off or refused (INFO)"
    )
    common.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="serve from N processes on the port (SO_REUSEPORT: Linux, FreeBSD; default 1)",
    )
    limits = common.add_argument_group("limits (see the serving how-to)")
    limits.add_argument(
        "--max-connections",
        type=_max_connections,
        default="auto",
        metavar="N",
        help="most connections at once; then accepting pauses (default auto: from ulimit -n)",
    )
    limits.add_argument(
        "--max-per-peer",
        type=_count_or_none,
        default=None,
        metavar="N",
        help="most connections from one IP address (or IPv6 /64) at once (default none)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=_seconds_or_none,
        metavar="SECONDS",
        help="close a connection that neither sends nor reads for this long (default: the "
        "demo's own)",
    )
    limits.add_argument(
        "--frame-timeout",
        type=_seconds_or_none,
        metavar="SECONDS",
        help="close a connection whose line or request takes longer than this from its first "
        "byte: against peers that trickle bytes (default: the demo's own)",
    )
    limits.add_argument(
        "--grace-period",
        type=_grace,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="on Ctrl-C, how long connections get to finish (default %(default)s)",
    )
    sub = parser.add_subparsers(dest="demo", required=True, metavar="DEMO")
    for name, demo in DEMOS.items():
        demo_parser = sub.add_parser(name, help=demo.help, description=demo.help, parents=[common])
        if name == "chat":
            demo_parser.add_argument(
                "--redis",
                metavar="URL",
                help="share the room through Redis pub/sub, e.g. redis://127.0.0.1:6379/0 "
                '(pip install "trio-chat[redis]")',
            )
            demo_parser.add_argument(
                "--nick-ttl",
                type=_seconds_or_none,
                metavar="SECONDS",
                help="with --redis: how long a nick outlives a process that died (default 10)",
            )
    args = parser.parse_args(argv)
    args.host = args.host or [DEFAULT_HOST]
    return args


# ------------------------------------------------------------------------------- serving


def address(host: str, port: int) -> str:
    """``host:port`` as it is written in a URL or a log: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dialable(host: str) -> str:
    """An address to connect to for a server listening on *host* (not a wildcard)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


class ListenError(Exception):
    """A listener could not be opened: the message names the problem and the fix."""


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {address(host, port)}"
    if isinstance(exc, socket.gaierror):
        return (
            f"{where}: cannot resolve {host!r} ({exc.strerror}); give an IP address such as "
            "127.0.0.1 or ::1, or a name this machine can resolve, with --host"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is taken; pick another with --port N (0 picks a free one)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: {host} is not an address of this machine; use --host 127.0.0.1 (this "
            "machine only), or 0.0.0.0 or :: (every IPv4 or IPv6 address)"
        )
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied; ports below 1024 need privileges: use --port 1024+"
    if exc.errno == errno.EAFNOSUPPORT:
        return f"{where}: IPv6 is not available on this machine; use an IPv4 address with --host"
    return f"{where}: {exc.strerror or exc}"


async def open_listeners(
    hosts: Sequence[str], port: int, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Listen on *port* of every host; with port 0, every host gets the port the first got.
    With *reuse_port*, other processes may listen on the same port (``--workers``).

    Raises:
        ListenError: one could not be opened (those already open are closed).
    """
    listeners: list[trio.SocketListener] = []
    try:
        for host in hosts:
            try:
                if reuse_port:
                    listeners += await open_tcp_listeners_reuseport(port, host=host)
                else:
                    listeners += await trio.open_tcp_listeners(port, host=host)
            except OSError as exc:
                raise ListenError(_listen_problem(host, port, exc)) from None
            port = port or listeners[0].socket.getsockname()[1]
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


@attrs.define
class Run:
    """One server run: what it served, and how it was stopped."""

    served: int = 0
    stopped_by: int | None = None  # the signal


def _limits(args: argparse.Namespace, served: Served) -> dict[str, Any]:
    options = dict(served.options)
    options["max_connections"] = args.max_connections
    options["max_connections_per_peer"] = args.max_per_peer
    if args.idle_timeout is not None or "idle_timeout" not in options:
        options["idle_timeout"] = "handler" if args.idle_timeout is None else args.idle_timeout
    if args.frame_timeout is not None:
        options["frame_timeout"] = args.frame_timeout
    options["grace_period"] = args.grace_period
    return options


async def serve_demo(
    args: argparse.Namespace,
    run: Run,
    tracer: TaskTreeTracer | None = None,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *args*' demo until SIGINT or SIGTERM (or *stop* is set): the first shuts down
    gracefully (the demo says goodbye, connections finish within the grace period), a second
    stops at once."""
    demo = DEMOS[args.demo]
    workers = args.workers > 1
    async with demo.serve(args) as served:

        def make_handler(stream: trio.abc.Stream) -> AsyncChat:
            # Called in the connection's own task, which is where the receive loop will run.
            run.served += 1
            handler = served.factory(stream)
            if tracer is not None:
                tracer.label(
                    trio.lowlevel.current_task(),
                    f"connection {run.served} ({describe_peer(stream)[0]}): run() and its "
                    "receive loop",
                )
            return handler

        def stop_gracefully() -> None:
            if served.goodbye is not None:
                served.goodbye()  # pushed before the connections are told to close
            shutdown.set()

        listeners = await open_listeners(args.host, args.port, reuse_port=workers)
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def serve(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
                    await serve_listeners(
                        make_handler,
                        listeners,
                        shutdown_event=shutdown,
                        task_status=task_status,
                        **_limits(args, served),
                    )
                    nursery.cancel_scope.cancel()  # done: stop waiting for signals

                async def stop_when_told(event: trio.Event) -> None:
                    await event.wait()  # a worker's supervisor went away
                    if not shutdown.is_set():
                        stop_gracefully()

                await nursery.start(serve, name="trio_chat.serve_listeners")
                names = [listener.socket.getsockname()[:2] for listener in listeners]
                host, port = _dialable(names[0][0]), names[0][1]
                hint = demo.connect.format(
                    host=host, port=port, url_host=f"[{host}]" if ":" in host else host
                )
                _log(
                    f"trio_chat {args.demo} server ({demo.help}) on "
                    f"{' and '.join(address(*name) for name in names)}; "
                    f"connect with: {hint}   (Ctrl-C stops it)"
                )
                task_status.started(listeners)
                if tracer is not None:
                    nursery.start_soon(tracer.run)
                if stop is not None:
                    nursery.start_soon(stop_when_told, stop)
                async for signum in signals:
                    if run.stopped_by is None:
                        run.stopped_by = signum
                        stop_gracefully()
                    else:
                        nursery.cancel_scope.cancel()  # a second signal: stop now


async def _worker_main(args: argparse.Namespace, worker: Worker) -> None:
    """One of ``--workers N`` processes: the demo, on the port the others share."""
    run = Run()
    await serve_demo(args, run, stop=worker.shutdown_event)
    _log(f"worker {worker.number} stopped; served {run.served} connection(s)")


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What makes this command line unusable before anything starts, or None."""
    if args.workers > 1 and args.port == 0:
        return "--workers N needs a fixed --port: with 0 each worker would get its own"
    if args.workers > 1 and args.demo == "chat" and not args.redis:
        return (
            "--workers N needs --redis URL: each worker process has its own members, and only "
            "a shared room lets them talk to each other"
        )
    if args.workers > 1 and args.trace:
        return "--trace shows the tasks of one process: leave out --workers to use it"
    if args.demo == "chat" and args.nick_ttl is not None and not args.redis:
        return "--nick-ttl applies to a room shared through Redis: give --redis URL too"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = _usage_problem(args)
    if problem is not None:
        print(f"python -m trio_chat {args.demo}: {problem}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.workers > 1:
        try:
            run_workers(partial(_worker_main, args), args.workers)
        except WorkerCrashError as exc:
            print(exc, file=sys.stderr)
            return 1
        print("stopped", flush=True)
        return 0
    run = Run()
    tracer = TaskTreeTracer(_log) if args.trace else None
    try:
        trio.run(
            partial(serve_demo, args, run, tracer),
            instruments=[tracer] if tracer is not None else [],
        )
    except ListenError as exc:
        print(exc, file=sys.stderr)
        return 1
    except chat_room.RoomUnavailableError as exc:
        print(f"cannot reach Redis at {args.redis}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        run.stopped_by = signal.SIGINT
    print(f"stopped; served {run.served} connection(s)", flush=True)
    return EXIT_CTRL_C if run.stopped_by == signal.SIGINT else 0

r"""Serve a handler on a Unix socket: a path in the file system instead of a TCP port.

Unix sockets reach only processes on the same machine, and the file's permissions say which
ones: a good fit for a control channel, or a local service behind a reverse proxy. trio has no
``open_unix_listener``, so ``open_unix_listener`` here builds a :class:`trio.SocketListener`
over a :mod:`trio.socket` ``AF_UNIX`` socket; ``serve_unix`` hands it to
:func:`trio_chat.serve_listeners` and removes the socket file when it stops. Try it::

    python examples/howto/unix_socket_server.py /tmp/echo.sock
    nc -U /tmp/echo.sock                   # or: socat - UNIX-CONNECT:/tmp/echo.sock
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import stat
import struct
import sys
from typing import Final

import trio

import trio_chat

# The socket file's permissions: read and write (which is what connecting needs) for the
# server's user only. Widen it (0o660 and a shared group) to let a group of users in.
DEFAULT_MODE: Final = 0o600


def remove_stale_socket(path: str) -> None:
    """Remove the socket file at *path* if no server listens on it any more.

    A socket file outlives a server that was killed, and ``bind()`` fails while it exists.

    Raises:
        FileExistsError: *path* exists and is not a socket (never remove a file you did not make).
        OSError: ``EADDRINUSE``: a server is listening on *path*.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a local connect() answers at once; a full backlog: EAGAIN
        try:
            probe.connect(path)
        except ConnectionRefusedError:  # nobody listens: the file is stale
            os.unlink(path)
            return
        except BlockingIOError:  # its backlog is full: it is very much alive
            pass
    raise OSError(errno.EADDRINUSE, "a server is listening on this socket", path)


async def open_unix_listener(
    path: str, *, mode: int = DEFAULT_MODE, backlog: int = socket.SOMAXCONN
) -> trio.SocketListener:
    """Listen on a Unix stream socket at *path*, created with permissions *mode*.

    Raises:
        OSError: as :func:`remove_stale_socket`, or from ``bind()`` (a missing directory, say).
    """
    remove_stale_socket(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
    except BaseException:
        sock.close()  # and leave the file alone: if it exists, it is not ours
        raise
    try:
        # bind() created the file with the umask's permissions, but until listen() nobody can
        # connect: set the permissions here and no client ever connects through the umask's.
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return trio.SocketListener(sock)


async def serve_unix(
    handler_factory: trio_chat.HandlerFactory,
    path: str,
    *,
    mode: int = DEFAULT_MODE,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *handler_factory* on a Unix socket at *path* until cancelled; then remove the file.

    ``task_status.started()`` gets the listeners, as from :func:`trio_chat.serve_listeners`.
    """
    listener = await open_unix_listener(path, mode=mode)
    try:
        inode = os.stat(path).st_ino
    except BaseException:
        await trio.aclose_forcefully(listener)
        raise
    try:
        await trio_chat.serve_listeners(handler_factory, [listener], task_status=task_status)
    finally:
        # Closing the socket leaves its file behind. Remove it, unless another server has
        # replaced it with its own in the meantime.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)


def peer_uid(stream: trio.abc.Stream | None) -> int | None:
    """The user id of the process at the other end of a Unix socket (Linux), else None.

    A Unix socket's peer has no address (log messages call it ``?``), but the kernel knows who
    it is: ``SO_PEERCRED`` gives its pid, uid and gid.
    """
    if not isinstance(stream, trio.SocketStream) or not hasattr(socket, "SO_PEERCRED"):
        return None
    if stream.socket.family != socket.AF_UNIX:
        return None
    # struct ucred: pid_t pid (signed), uid_t uid and gid_t gid (unsigned), 32 bits each.
    credentials = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    _pid, uid, _gid = struct.unpack("iII", credentials)
    return int(uid)


class Echo(trio_chat.AsyncChat):
    """Greets the peer (by user id, where the system tells it), then echoes lines."""

    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self._pieces: list[bytes] = []
        self.set_terminator(b"\n")

    def handle_connect(self) -> None:
        uid = peer_uid(self.stream)
        self.push(b"hello" + (b"" if uid is None else b", uid %d" % uid) + b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._pieces.append(data)

    def found_terminator(self) -> None:
        self.push(b"".join(self._pieces) + b"\n")
        self._pieces.clear()


async def main(path: str) -> None:
    """Serve ``Echo`` on *path* until Ctrl-C or SIGTERM; the socket file goes with it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_unix, Echo, path)
            print(f"listening on {path}; try: nc -U {path}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} PATH")
    try:
        trio.run(main, sys.argv[1])
    except OSError as exc:
        raise SystemExit(f"cannot listen on {sys.argv[1]}: {exc}") from None

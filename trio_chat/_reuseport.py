"""Listening sockets that several processes share: ``SO_REUSEPORT``.

With ``SO_REUSEPORT`` set before ``bind()``, every process that binds the same address and port
gets a listening socket of its own, and the kernel spreads new connections over them (on Linux
by a hash of the peer's address and port). It is how N single-threaded trio processes share one
port without a process in front of them handing out connections.

This module sits beside trio's own listener helpers, below serving: it imports nothing of
trio_chat's.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Final

import trio

__all__ = ["check_reuseport_supported", "open_tcp_listeners_reuseport"]

# Where SO_REUSEPORT spreads connections over the sockets of a group. Linux (3.9+) does it with
# SO_REUSEPORT itself; FreeBSD (12+) needs SO_REUSEPORT_LB, which we set too when the socket
# module has it; DragonFly BSD balances with SO_REUSEPORT. macOS, OpenBSD and NetBSD accept the
# option but hand every connection to one socket, so N workers would be 1 worker and N-1 idle
# processes: refused rather than silently useless. Windows has no such option.
_BALANCING_PLATFORMS: Final = ("linux", "freebsd", "dragonfly")

# The listen backlog when none is given: the largest that every kernel accepts (they store it in
# 16 bits and truncate it to their own maximum), as trio.open_tcp_listeners does.
_MAX_BACKLOG: Final = 0xFFFF


def check_reuseport_supported() -> None:
    """Raise :exc:`NotImplementedError` unless this platform balances ``SO_REUSEPORT`` sockets.

    Raises:
        NotImplementedError: not Linux, FreeBSD or DragonFly BSD (or no ``SO_REUSEPORT``).
    """
    if not sys.platform.startswith(_BALANCING_PLATFORMS) or not hasattr(socket, "SO_REUSEPORT"):
        raise NotImplementedError(
            f"SO_REUSEPORT does not spread connections over processes on {sys.platform!r} "
            "(it does on Linux, FreeBSD and DragonFly BSD): run one process per port here, "
            "or put a load balancer in front of several"
        )


async def open_tcp_listeners_reuseport(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Like :func:`trio.open_tcp_listeners`, with ``SO_REUSEPORT`` set on every socket.

    Other processes (and this one) can then listen on the same *host* and *port* with this
    function, and the kernel spreads new connections over all the listening sockets. Use a
    fixed *port*: with 0, each caller gets a port of its own. A connection waiting in one
    socket's backlog goes down with it: if a worker dies, those peers see a reset.

    Args:
        port: the port to listen on, the same in every process.
        host: the address to bind, as for :func:`trio.open_tcp_listeners` (None: every IPv4
            and IPv6 address).
        backlog: the listen backlog of each socket (None: the system's maximum).

    Returns:
        One listener per address *host* resolves to.

    Raises:
        NotImplementedError: the platform does not spread connections over such sockets (see
            :func:`check_reuseport_supported`).
        OSError: binding failed, e.g. ``EADDRINUSE`` because a process that did not set
            ``SO_REUSEPORT`` (or runs as another user) holds the port.
    """
    check_reuseport_supported()
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__!r}")
    if backlog is not None and (isinstance(backlog, bool) or not isinstance(backlog, int)):
        raise TypeError(f"backlog must be an int or None, not {type(backlog).__name__!r}")
    listen_backlog = _MAX_BACKLOG if backlog is None else min(backlog, _MAX_BACKLOG)
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    unsupported: list[OSError] = []
    try:
        for family, type_, proto, _, address in addresses:
            try:
                sock = trio.socket.socket(family, type_, proto)
            except OSError as exc:
                # An IPv4-only (or IPv6-only) host still resolves "" to both families.
                if exc.errno != errno.EAFNOSUPPORT:
                    raise
                unsupported.append(exc)
                continue
            try:
                _set_options(sock, family)
                await sock.bind(address)
                sock.listen(listen_backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if not listeners:
        raise OSError(
            errno.EAFNOSUPPORT,
            f"no address family of {host!r} can be used on this system: {unsupported}",
        )
    return listeners


def _set_options(sock: trio.socket.SocketType, family: int) -> None:
    # SO_REUSEADDR as trio sets it (a restarted server can bind while old connections linger in
    # TIME_WAIT); SO_REUSEPORT before bind(), or bind() fails with EADDRINUSE in the second
    # process; SO_REUSEPORT_LB where it exists (FreeBSD), which is the balancing variant there.
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if hasattr(socket, "SO_REUSEPORT_LB"):  # pragma: no cover - FreeBSD only
        sock.setsockopt(trio.socket.SOL_SOCKET, socket.SO_REUSEPORT_LB, 1)
    if family == trio.socket.AF_INET6:
        # As trio does: "::" then means IPv6 only, and "0.0.0.0" gets a socket of its own.
        sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)

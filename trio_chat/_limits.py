"""Serving's connection limits: free slots (``max_connections``) and counts per peer address.

* :class:`SlotListener` wraps a listener so that ``accept()`` first waits for a free slot: given
  to :func:`trio.serve_listeners`, it is what pauses accepting at ``max_connections`` (new peers
  wait in the kernel's listen backlog; nothing is refused).
* :class:`PeerLimit` counts the open connections of each peer address (IPv6 by network prefix)
  for the opt-in ``max_connections_per_peer``.
* :func:`default_max_connections` derives the default ``max_connections`` from the open-file
  limit.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

import attrs
import trio

from ._serve_log import ThrottledLog

__all__ = ["PeerLimit", "SlotListener", "default_max_connections", "peer_key"]

# Open files kept back from connections when max_connections is derived from the open-file
# limit: listening sockets, the event loop's own (epoll, its wake-up pipe), log files, and what
# handlers open themselves (a database connection, a file they serve). An eighth of the limit,
# at least 64: a server at the usual soft limit of 1,024 keeps 128 and serves 896 peers, and
# accept() meets EMFILE only when handlers open more than that between them.
_RESERVED_FILES_MIN: Final = 64
_RESERVED_FILES_FRACTION: Final = 8

# Where the open-file limit cannot be read (Windows has no RLIMIT_NOFILE), or is "unlimited":
# what a default server allowed before the limit was derived.
_FALLBACK_MAX_CONNECTIONS: Final = 1000
# An "unlimited" soft limit is read as Linux's own ceiling (fs.nr_open's default, 2**20).
_UNLIMITED_FILES: Final = 1 << 20

# A connection over max_connections_per_peer waits this long for one of its peer's connections
# to close before it is refused. A client that closes a connection and opens the next at once
# (redis-benchmark, a connection pool) sends its FIN just before the new SYN: the server has not
# processed that end of input yet when it accepts the newcomer. A second covers that by far on
# a loaded server, and keeps a refused peer's slot for at most that long.
PEER_WAIT: Final = 1.0


def default_max_connections() -> int:
    """The ``max_connections`` a server gets by default: derived from the open-file limit.

    It is the process's soft ``RLIMIT_NOFILE`` (``ulimit -n``) as it is now, minus an eighth of
    it (at least 64) kept for other files: 896 at the usual limit of 1,024. At that many open
    connections accepting pauses, instead of failing with ``EMFILE`` one file later. Raise the
    limit (``ulimit -n``, systemd's ``LimitNOFILE=``, :func:`resource.setrlimit`) to serve more.
    Where the limit cannot be read (Windows), it is 1,000.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return _FALLBACK_MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > _UNLIMITED_FILES:
        soft = _UNLIMITED_FILES
    reserved = max(_RESERVED_FILES_MIN, soft // _RESERVED_FILES_FRACTION)
    return max(1, soft - reserved)


def peer_key(host: str, ipv6_prefix: int) -> str:
    """What *host*'s connections are counted under: the IPv4 address itself, or the IPv6
    network of *ipv6_prefix* bits around it (an IPv4-mapped IPv6 address counts as IPv4).

    A site or a home gets a whole IPv6 /64 (often a /56 or /48), so one peer can make every
    connection come from a different address in it: counting addresses would count nothing.
    """
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # without a zone (fe80::1%eth0)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ipv6_prefix < 128:
            return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)


class Counted(Protocol):
    """What the limits need to know of an accepted connection."""

    @property
    def peer(self) -> str: ...

    def stream_closed(self) -> bool: ...


C = TypeVar("C", bound=Counted)


@attrs.define(eq=False)
class _Bucket(Generic[C]):
    """The open connections of one peer (one address, or one IPv6 network)."""

    open: set[C] = attrs.field(factory=set)
    waiting: int = 0  # newcomers over the limit waiting for one of these to close
    changed: trio.Event | None = None  # set when one of them closes


@attrs.define(eq=False)
class PeerLimit(Generic[C]):
    """``max_connections_per_peer``: at most *limit* open connections per peer key."""

    limit: int
    log: ThrottledLog
    buckets: dict[str, _Bucket[C]] = attrs.field(factory=dict)

    async def admit(self, connection: C, key: str) -> bool:
        """Count *connection* under *key*; False (logged) if its peer is over the limit.

        Over the limit, it waits up to :data:`PEER_WAIT` seconds for one of the peer's other
        connections to close; at most *limit* newcomers of one peer wait at once.
        """
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket()
        if self._take(bucket, connection):
            return True
        if bucket.waiting < self.limit:
            bucket.waiting += 1
            try:
                with trio.move_on_after(PEER_WAIT):
                    while True:
                        if bucket.changed is None:
                            bucket.changed = trio.Event()
                        await bucket.changed.wait()
                        if self._take(bucket, connection):
                            return True
            finally:
                bucket.waiting -= 1
                self._drop_if_empty(key, bucket)
        self.log.log(
            "max_connections_per_peer",
            logging.WARNING,
            "refusing connection from %s: %d connection(s) from %s are open "
            "(max_connections_per_peer=%d)",
            connection.peer,
            len(bucket.open),
            key,
            self.limit,
        )
        return False

    def release(self, connection: C, key: str) -> None:
        """*connection* has closed: it no longer counts, and a waiting newcomer may go."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        bucket.open.discard(connection)
        if bucket.changed is not None:
            bucket.changed.set()
            bucket.changed = None
        self._drop_if_empty(key, bucket)

    def _take(self, bucket: _Bucket[C], connection: C) -> bool:
        if len(bucket.open) >= self.limit:
            # A connection whose stream is closed no longer counts, even while its task is
            # still finishing (connection_lost, logging): look before refusing anyone.
            for other in [other for other in bucket.open if other.stream_closed()]:
                bucket.open.discard(other)
        if len(bucket.open) < self.limit:
            bucket.open.add(connection)
            return True
        return False

    def _drop_if_empty(self, key: str, bucket: _Bucket[C]) -> None:
        if not bucket.open and not bucket.waiting and self.buckets.get(key) is bucket:
            del self.buckets[key]


R = TypeVar("R", bound=trio.abc.AsyncResource)


class SlotListener(trio.abc.Listener[R]):
    """A listener whose ``accept()`` waits for a free slot of *slots* before accepting.

    The slot is taken (on behalf of what *admit* made of the stream) only once a connection was
    accepted, so that with several listeners (IPv4 and IPv6) one that gets no connections never
    keeps the last free slot from the others. The caller releases it with
    ``slots.release_on_behalf_of(connection)``.

    Args:
        listener: the listener to accept on (closed by :meth:`aclose`).
        slots: one token per open connection; None: no limit.
        admit: called with each accepted stream, before anything can fail; makes the record
            the rest of serving works with (an :class:`trio.abc.AsyncResource` that closes the
            stream).
        log: where pausing and resuming are reported (summarised under a flood).
    """

    def __init__(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        slots: trio.CapacityLimiter | None,
        admit: Callable[[trio.abc.Stream], R],
        log: ThrottledLog,
    ) -> None:
        self.listener = listener
        self.slots = slots
        self.admit = admit
        self.log = log

    async def accept(self) -> R:
        slots = self.slots
        if slots is not None and slots.available_tokens < 1:
            self.log.log(
                "max_connections",
                logging.INFO,
                "max_connections=%d reached: accepting paused until a connection closes",
                slots.total_tokens,
            )
            # Wait for a free token without keeping it: it is taken after accept() below.
            probe = object()
            await slots.acquire_on_behalf_of(probe)
            slots.release_on_behalf_of(probe)
            self.log.log("max_connections", logging.INFO, "accepting resumed")
        stream = await self.listener.accept()
        connection = self.admit(stream)
        if slots is not None:
            try:
                # At once, unless another listener's connection took the token we waited for.
                await slots.acquire_on_behalf_of(connection)
            except BaseException:
                await connection.aclose()
                raise
        return connection

    async def aclose(self) -> None:
        await self.listener.aclose()

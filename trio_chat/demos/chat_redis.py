"""The chat room shared through Redis: members of any process, on any machine, talk together.

``python -m trio_chat.demos.chat_room --redis redis://127.0.0.1:6379/0 --workers 2`` (needs
``pip install "trio-chat[redis]"``: the client is `coredis <https://coredis.readthedocs.io>`_,
which runs on trio through anyio).

What goes to Redis, under one *prefix* (default ``trio_chat:room``):

* ``PREFIX:nick:KEY``: one string per nick (``KEY`` is :func:`~trio_chat.demos.chat_room.nick_key`
  of it), holding the member's token, set with ``SET NX PX``: a nick taken in one process is
  taken in all. Its expiry (*nick_ttl*) is renewed while the member is connected, so when a
  process dies its members' nicks expire.
* ``PREFIX:nicks``: a hash, nick key to nick, of who is in the room (``/who``, and the name to
  announce when a key expired).
* the channel ``PREFIX``: every line the members should see, as JSON
  ``{"line": "<alice> hi", "from": "TOKEN"}``, where ``from`` names the member not to show it
  to (its sender) or is empty.

What stays in each process: its own connections and members (:class:`Room`'s bookkeeping), and
the fan-out to them (:meth:`Room.broadcast`), run by four tasks:

* **subscriber**: ``SUBSCRIBE PREFIX``; every line goes to :meth:`Room.broadcast`. When the
  connection breaks it tells the members, reconnects (waiting 0.1 s, doubling up to 2 s) and
  tells them again: pub/sub does not keep what was said meanwhile.
* **outbox**: the one task that writes this process's joins, messages, renames, leaves and
  renewals, one at a time, so a member's lines reach the channel in the order it sent them.
  When 256 writes wait in it, a member's hook waits for room (backpressure, in turn with the
  others), and is told its line was not sent after 5 seconds.
* **renewer**: every *nick_ttl* / 3 seconds, extends the keys of this process's members (one
  script for all); a key that is gone (Redis restarted) is claimed again.
* **reaper**: every *reap_interval* seconds, one script removes the nicks whose key expired and
  announces "left (connection lost)": atomic, so each departure is announced once however many
  processes run it.

Not for Redis Cluster: the scripts touch keys they compute (one Redis, or one primary with
replicas, serves a room).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from trio_chat.demos.chat_room import (
    Member,
    Room,
    RoomUnavailableError,
    nick_key,
    sorted_nicks,
)

__all__ = ["DEFAULT_NICK_TTL", "RedisRoom", "open_redis_room"]

logger: Final = logging.getLogger("trio_chat.demos.chat_redis")

T = TypeVar("T")

# 10 seconds: a process that dies is announced gone within nick_ttl + reap_interval (15 s),
# while a live one renews every 3.3 s and so rides out a stall (a GC pause, a slow Redis, a
# failover) of several seconds without its members losing their nicks.
DEFAULT_NICK_TTL: Final = 10.0

# Every Redis call is bounded: a Redis that accepts connections but does not answer must not
# hold a member's command (or the outbox) forever. 5 s is far above a healthy round trip
# (well under a millisecond on a LAN) and below what a member waits before giving up on a line.
_CALL_TIMEOUT: Final = 5.0

# How long a member's hook waits for room in a full outbox (or for its turn, for a command that
# needs an answer) before it is told the room is too busy: the same bound as one call.
_QUEUE_TIMEOUT: Final = _CALL_TIMEOUT

# Reconnecting the subscriber: soon after a blip, then no more often than every 2 s.
_RECONNECT_FIRST: Final = 0.1
_RECONNECT_MAX: Final = 2.0

# The outbox holds this many writes before members' hooks wait for room in it: enough to absorb
# a burst from every member at once, little enough that what is queued is written within a few
# hundred milliseconds even at a few thousand round trips a second.
_OUTBOX_SIZE: Final = 256

# At shutdown, the members' leaves still queued get this long to reach Redis.
_DRAIN_TIMEOUT: Final = 2.0

_REDIS_ERRORS: Final = (RedisError, OSError, trio.TooSlowError)

# Shared by the scripts: the JSON of a line for everyone, and a stale nick (its key expired,
# the reaper has not run yet) announced before its name is reused.
_LUA_COMMON = """
local function line(text)
  return cjson.encode({line = text, from = ""})
end
local function announce_stale(hash, field, channel)
  local stale = redis.call("HGET", hash, field)
  if stale then
    redis.call("PUBLISH", channel, line("* " .. stale .. " left (connection lost)"))
  end
end
"""

# KEYS: nick key, hash, channel. ARGV: token, ttl ms, field, nick, event.
# The nicks already here, or nil (false) if the nick is taken.
_JOIN = (
    _LUA_COMMON
    + """
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return false
end
announce_stale(KEYS[2], ARGV[3], KEYS[3])
local here = redis.call("HVALS", KEYS[2])
redis.call("HSET", KEYS[2], ARGV[3], ARGV[4])
redis.call("PUBLISH", KEYS[3], ARGV[5])
return here
"""
)

# KEYS: new nick key, old nick key, hash, channel.
# ARGV: token, ttl ms, new field, new nick, old field, event. 1 if renamed, 0 if taken.
_RENAME = (
    _LUA_COMMON
    + """
if KEYS[1] == KEYS[2] then
  if redis.call("GET", KEYS[1]) ~= ARGV[1] then
    return 0
  end
else
  if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
    return 0
  end
  announce_stale(KEYS[3], ARGV[3], KEYS[4])
  if redis.call("GET", KEYS[2]) == ARGV[1] then
    redis.call("DEL", KEYS[2])
  end
  redis.call("HDEL", KEYS[3], ARGV[5])
end
redis.call("HSET", KEYS[3], ARGV[3], ARGV[4])
redis.call("PUBLISH", KEYS[4], ARGV[6])
return 1
"""
)

# KEYS: nick key, hash, channel. ARGV: token, field, event. Only the owner's leave counts.
_LEAVE = """
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[1])
redis.call("HDEL", KEYS[2], ARGV[2])
redis.call("PUBLISH", KEYS[3], ARGV[3])
return 1
"""

# KEYS: hash, channel, then one nick key per member. ARGV: ttl ms, then token, field, nick per
# member. Returns the positions (1-based) of the members whose nick another member now holds.
_RENEW = (
    _LUA_COMMON
    + """
local lost = {}
for i = 3, #KEYS do
  local token, field, nick = ARGV[3 * i - 7], ARGV[3 * i - 6], ARGV[3 * i - 5]
  local owner = redis.call("GET", KEYS[i])
  if owner == token then
    redis.call("PEXPIRE", KEYS[i], ARGV[1])
  elseif not owner then
    redis.call("SET", KEYS[i], token, "PX", ARGV[1])
    if redis.call("HSET", KEYS[1], field, nick) == 1 then
      redis.call("PUBLISH", KEYS[2], line("* " .. nick .. " is back"))
    end
  else
    table.insert(lost, i - 2)
  end
end
return lost
"""
)

# KEYS: hash, channel. ARGV: the nick keys' prefix. How many departures it announced.
_REAP = (
    _LUA_COMMON
    + """
local entries = redis.call("HGETALL", KEYS[1])
local gone = 0
for i = 1, #entries, 2 do
  if redis.call("EXISTS", ARGV[1] .. entries[i]) == 0 then
    redis.call("HDEL", KEYS[1], entries[i])
    redis.call("PUBLISH", KEYS[2], line("* " .. entries[i + 1] .. " left (connection lost)"))
    gone = gone + 1
  end
end
return gone
"""
)


def _event(line: str, sender: str = "") -> str:
    return json.dumps({"line": line, "from": sender})


class RedisRoom(Room):
    """A :class:`~trio_chat.demos.chat_room.Room` whose members may be in other processes.

    Made and run by :func:`open_redis_room`. This process's members are kept and reached as in
    the in-process room; nicks and lines go through Redis.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        prefix: str,
        nick_ttl: float,
        reap_interval: float,
    ) -> None:
        super().__init__()
        self.client: coredis.Redis[str] = client
        self.channel: str = prefix
        self.hash: str = f"{prefix}:nicks"
        self.key_prefix: str = f"{prefix}:nick:"
        self.nick_ttl: float = nick_ttl
        self.reap_interval: float = reap_interval
        # A member's token: which process (a random id, unique across machines) and which member.
        self._process_id = uuid.uuid4().hex[:12]
        self._numbers = itertools.count()
        self.tokens: dict[Member, str] = {}
        self.by_token: dict[str, Member] = {}
        self._outbox, self._outbox_receive = trio.open_memory_channel[
            Callable[[], Awaitable[None]]
        ](_OUTBOX_SIZE)
        self._outbox_done = trio.Event()
        self._join = client.register_script(_JOIN)
        self._rename = client.register_script(_RENAME)
        self._leave = client.register_script(_LEAVE)
        self._renew = client.register_script(_RENEW)
        self._reap = client.register_script(_REAP)

    # ------------------------------------------------------- what members call

    async def join(self, member: Member, nick: str) -> list[str] | None:
        token = self._token(member)
        key = nick_key(nick)
        here: object = await self._in_order(
            lambda: self._call(
                self._join(
                    keys=[self.key_prefix + key, self.hash, self.channel],
                    args=[token, self._ttl_ms(), key, nick, _event(f"* {nick} joined", token)],
                )
            )
        )
        if here is None:
            return None
        self.add(member, nick)
        return sorted_nicks(_strings(here))

    async def rename(self, member: Member, nick: str) -> bool:
        assert member.nick is not None
        old = member.nick
        token = self._token(member)
        done: object = await self._in_order(
            lambda: self._call(
                self._rename(
                    keys=[
                        self.key_prefix + nick_key(nick),
                        self.key_prefix + nick_key(old),
                        self.hash,
                        self.channel,
                    ],
                    args=[
                        token,
                        self._ttl_ms(),
                        nick_key(nick),
                        nick,
                        nick_key(old),
                        _event(f"* {old} is now known as {nick}"),
                    ],
                )
            )
        )
        if done != 1:
            return False
        self.remove(member)
        self.add(member, nick)
        return True

    async def say(self, member: Member, text: str) -> None:
        event = _event(f"<{member.nick}> {text}", self._token(member))

        async def publish() -> None:
            try:
                await self._call(self.client.publish(self.channel, event))
            except RoomUnavailableError:
                _tell(member, "* not sent: the room's server cannot be reached")

        if not await self._queue(publish):
            _tell(member, "* not sent: the room is too busy, try again")

    async def who(self) -> list[str]:
        return sorted_nicks(await self._call(self.client.hvals(self.hash)))

    async def leave(self, member: Member, why: str = "") -> None:
        self.connected.discard(member)
        token = self.tokens.pop(member, None)
        if token is not None:
            del self.by_token[token]
        nick = member.nick
        if token is None or nick is None or not self.remove(member):
            return
        key = nick_key(nick)
        event = _event(f"* {nick} left{why}")

        async def release() -> None:
            # If Redis cannot be reached, the key expires instead, and a reaper announces it.
            with contextlib.suppress(RoomUnavailableError):
                await self._call(
                    self._leave(
                        keys=[self.key_prefix + key, self.hash, self.channel],
                        args=[token, key, event],
                    )
                )

        await self._queue(release)  # if it cannot be queued, the key expires instead

    # --------------------------------------------------------------- helpers

    def _token(self, member: Member) -> str:
        token = self.tokens.get(member)
        if token is None:
            token = f"{self._process_id}:{next(self._numbers)}"
            self.tokens[member] = token
            self.by_token[token] = member
        return token

    def _ttl_ms(self) -> int:
        return max(1, round(self.nick_ttl * 1000))

    async def _call(self, request: Awaitable[T]) -> T:
        """Await one Redis request, bounded; any failure becomes RoomUnavailableError."""
        try:
            with trio.fail_after(_CALL_TIMEOUT):
                return await request
        except _REDIS_ERRORS as exc:
            raise RoomUnavailableError(f"the room's Redis cannot be reached: {exc}") from exc

    async def _queue(self, write: Callable[[], Awaitable[None]]) -> bool:
        """Queue *write* for the outbox; False if it could not be (full for too long, closed).

        A full outbox makes the member's hook wait: one member talking faster than Redis takes
        the lines slows down itself, and waits its turn with the others (trio's channels queue
        the waiting senders in order), instead of taking the room's whole outbox.
        """
        with trio.move_on_after(_QUEUE_TIMEOUT):
            try:
                await self._outbox.send(write)
            except trio.ClosedResourceError:
                return False  # shutting down
            return True
        return False

    async def _in_order(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run *call* in the outbox, after what this process queued before; its result."""
        results: list[T] = []
        errors: list[RoomUnavailableError] = []
        started = trio.Event()
        done = trio.Event()
        abandoned = False

        async def write() -> None:
            if abandoned:
                done.set()
                return
            started.set()
            try:
                results.append(await call())
            except RoomUnavailableError as exc:
                errors.append(exc)
            finally:
                done.set()

        # A place in the outbox and a turn, within the bound of one call; a write that did not
        # start by then is skipped when its turn comes (the member has been told it failed).
        with trio.move_on_after(_QUEUE_TIMEOUT):
            if await self._queue(write):
                await started.wait()
        if not started.is_set():
            abandoned = True
            raise RoomUnavailableError("the room is too busy")
        await done.wait()  # bounded: the call itself is
        if errors:
            raise errors[0]
        return results[0]

    def _deliver(self, data: object) -> None:
        line, sender = _parse_event(data)
        if line is None:
            logger.warning("ignoring a malformed message on %s: %.100r", self.channel, data)
            return
        # broadcast() escapes control characters, whoever published the line.
        self.broadcast(line, exclude=self.by_token.get(sender))

    # ----------------------------------------------------------------- tasks

    async def subscriber(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver the channel's lines to this process's members; reconnect when it breaks."""
        started = False
        delay = _RECONNECT_FIRST
        while True:
            try:
                # NoRetryPolicy: we reconnect ourselves, to tell the members about the gap.
                async with self.client.pubsub(
                    channels=[self.channel],
                    ignore_subscribe_messages=True,
                    retry_policy=NoRetryPolicy(),
                ) as pubsub:
                    if not started:
                        started = True
                        task_status.started()
                    elif delay > _RECONNECT_FIRST:
                        logger.warning("reconnected to Redis")
                        self.broadcast(
                            "* reconnected to the room (anything said meanwhile is lost)"
                        )
                    delay = _RECONNECT_FIRST
                    async for message in pubsub:
                        self._deliver(message["data"])
            except Exception as exc:  # coredis raises its errors inside exception groups
                cause = _first_leaf(exc)
                if not started:
                    raise RoomUnavailableError(
                        f"cannot subscribe to {self.channel}: {cause}"
                    ) from exc
                if delay == _RECONNECT_FIRST:
                    # A connection error is expected here; anything else gets its traceback.
                    expected = isinstance(cause, _REDIS_ERRORS)
                    logger.warning(
                        "lost the connection to Redis (%s: %s): reconnecting",
                        type(cause).__name__,
                        cause,
                        exc_info=None if expected else exc,
                    )
                    self.broadcast("* lost touch with the room: reconnecting")
                await trio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)

    async def outbox(self) -> None:
        """Write what this process's members did to Redis, one thing at a time, in order."""
        try:
            async with self._outbox_receive:
                async for write in self._outbox_receive:
                    try:
                        await write()
                    except Exception:  # a bug: one write lost, not the room
                        logger.exception("a write to Redis failed")
        finally:
            self._outbox_done.set()

    async def renewer(self) -> None:
        """Extend this process's members' nick keys while they are connected."""
        while True:
            await trio.sleep(self.nick_ttl / 3)
            try:
                # Through the outbox: a leave queued before it is then already done.
                await self._outbox.send(self._renew_members)
            except trio.ClosedResourceError:
                return

    async def _renew_members(self) -> None:
        members = [m for m in self.members.values() if m in self.tokens and m.nick is not None]
        if not members:
            return
        keys: list[str] = [self.hash, self.channel]
        args: list[str | int] = [self._ttl_ms()]
        for member in members:
            assert member.nick is not None
            keys.append(self.key_prefix + nick_key(member.nick))
            args += [self.tokens[member], nick_key(member.nick), member.nick]
        try:
            lost: object = await self._call(self._renew(keys=keys, args=args))
        except RoomUnavailableError:
            return  # the subscriber tells the members; the next round tries again
        for position in _strings(lost):
            member = members[int(position) - 1]
            _tell(member, "* someone took your nick while the room could not be reached: bye")
            member.close_when_done()

    async def reaper(self) -> None:
        """Announce the members whose process died (their nick key expired)."""
        while True:
            await trio.sleep(self.reap_interval)
            with contextlib.suppress(RoomUnavailableError):  # the subscriber tells the members
                await self._call(self._reap(keys=[self.hash, self.channel], args=[self.key_prefix]))


def _parse_event(data: object) -> tuple[str | None, str]:
    """The line and sender of a channel message; (None, "") if it is not one of ours."""
    try:
        event = json.loads(data) if isinstance(data, str) else None
    except ValueError:
        return None, ""
    if not isinstance(event, dict):
        return None, ""
    line, sender = event.get("line"), event.get("from")
    if not isinstance(line, str) or not isinstance(sender, str):
        return None, ""
    return line, sender


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside *exc*'s exception groups (*exc* if it is not a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _strings(reply: object) -> list[str]:
    """A script's array reply, as strings (an integer reply's items come back as ints)."""
    if not isinstance(reply, list):
        raise RoomUnavailableError(f"unexpected reply from Redis: {reply!r}")
    return [str(item) for item in reply]


def _tell(member: Member, text: str) -> None:
    with contextlib.suppress(trio.ClosedResourceError):  # it has gone meanwhile
        member.say(text)


@asynccontextmanager
async def open_redis_room(
    url: str,
    *,
    prefix: str = "trio_chat:room",
    nick_ttl: float = DEFAULT_NICK_TTL,
    reap_interval: float | None = None,
) -> AsyncIterator[RedisRoom]:
    """Connect to Redis at *url*, run the room's tasks, and yield the room.

    On exit the members' leaves still queued are written (for up to 2 seconds), then the tasks
    are cancelled and the connection closed.

    Args:
        url: e.g. ``redis://127.0.0.1:6379/0`` (``rediss://`` for TLS, ``unix://`` for a
            socket), as :meth:`coredis.Redis.from_url` reads it.
        prefix: the channel's name and the keys' prefix: rooms with different prefixes share
            nothing.
        nick_ttl: seconds a nick outlives its member's process (renewed every third of it).
        reap_interval: seconds between checks for expired nicks (default: *nick_ttl* / 2).

    Raises:
        RoomUnavailableError: Redis cannot be reached (on entry).
    """
    if not nick_ttl > 0 or math.isinf(nick_ttl):
        raise ValueError(f"nick_ttl must be a number of seconds more than 0, not {nick_ttl!r}")
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url, decode_responses=True, connect_timeout=_CALL_TIMEOUT
    )
    room = RedisRoom(
        client,
        prefix=prefix,
        nick_ttl=nick_ttl,
        reap_interval=nick_ttl / 2 if reap_interval is None else reap_interval,
    )
    unreachable: BaseException | None = None
    async with client:
        try:
            await room._call(client.ping())
        except RoomUnavailableError as exc:
            # Raised below, outside the client's task group, which would wrap it in a group.
            unreachable = exc.__cause__
        else:
            async with trio.open_nursery() as nursery:
                await nursery.start(room.subscriber)
                nursery.start_soon(room.outbox)
                nursery.start_soon(room.renewer)
                nursery.start_soon(room.reaper)
                try:
                    yield room
                finally:
                    room._outbox.close()
                    with trio.move_on_after(_DRAIN_TIMEOUT) as drain:
                        drain.shield = True
                        await room._outbox_done.wait()
                    nursery.cancel_scope.cancel()
    if unreachable is not None:
        raise RoomUnavailableError(f"cannot reach Redis at {url}: {unreachable}")

"""trio_chat/demos/chat_redis.py: the chat room shared through a real redis-server.

Two rooms on one Redis stand for two processes (the process tests are in
test_chat_redis_processes.py): what one room's members say, the other's hear.
"""

from __future__ import annotations

import gc
import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from chat_clients import Person, Visitors, chat_room_server
from redis_server import RedisServer, free_port, redis_server

pytest.importorskip("coredis", reason="the Redis room needs coredis: pip install trio-chat[redis]")

from trio_chat.demos import chat_redis
from trio_chat.demos.chat_redis import RedisRoom, open_redis_room
from trio_chat.demos.chat_room import RoomUnavailableError

# coredis 6.9 leaves the anyio memory streams of a connection that failed to connect unclosed
# (BaseConnection.__init__ creates them; nothing closes them when connect() fails): a
# ResourceWarning per stream when it is collected. Ours to ignore, not to fix; the fixture
# collects them before the test ends so they are not blamed on a later one.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function MemoryObject"
        ":pytest.PytestUnraisableExceptionWarning",
        "ignore:Unclosed <MemoryObject:ResourceWarning",
    ),
    # A redis-server per test and nick expiries measured in seconds: run once in CI (.ci/run).
    pytest.mark.heavy,
]

TIMEOUT = 60  # seconds for a whole test: a bound for hangs, with room for a loaded machine
# Long enough that a live room renews its nicks in time even on a loaded machine (every 10 s;
# CI runs four suites side by side on two cores, and a renewal starved past the expiry makes
# the reaper announce a live member gone). No test here waits for an expiry: the process tests
# use a short one to see a dead process's members announced.
NICK_TTL = 30.0
_prefixes = itertools.count()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server
    gc.collect()


@asynccontextmanager
async def rooms(redis: RedisServer, count: int = 2) -> AsyncIterator[list[Visitors]]:
    """*count* rooms on one Redis (as *count* processes would have), each on its own port."""
    prefix = f"test:{next(_prefixes)}"
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(count):
            room = await stack.enter_async_context(
                open_redis_room(redis.url, prefix=prefix, nick_ttl=NICK_TTL)
            )
            servers.append(await stack.enter_async_context(chat_room_server(room=room)))
        yield servers


async def test_members_of_two_processes_talk_rename_and_leave(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with rooms(redis) as (one, two):
            alice = await one.join("alice")
            bob = await two.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            await alice.say("hi bob")
            assert await bob.hear() == "<alice> hi bob"
            await bob.say("hi alice\r")
            assert await alice.hear() == "<bob> hi alice"
            await bob.say("/nick robert")
            assert await bob.hear() == "* bob is now known as robert"
            assert await alice.hear() == "* bob is now known as robert"
            await alice.say("/who")
            assert await alice.hear() == "* here: alice, robert"
            await alice.say("/quit")
            assert await alice.hear() == "Bye!"
            await alice.hear_eof()
            assert await bob.hear() == "* alice left"
            await bob.say("/who")
            assert await bob.hear() == "* here: robert"


async def test_nicks_are_unique_across_processes(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with rooms(redis) as (one, two):
            alice = await one.join("alice")
            newcomer = await two.arrive()
            for twin in ("alice", "ALICE", "a1ice"):
                await newcomer.say(twin)
                assert await newcomer.hear() == f"* {twin} is taken, try another"
            await newcomer.say("carol")
            assert await newcomer.hear() == "* hello carol; here: alice"
            assert await alice.hear() == "* carol joined"
            await alice.say("/nick Carol")
            assert await alice.hear() == "* Carol is taken, try another"
            await alice.say("/nick ALICE")  # her own nick in capitals: a rename
            assert await alice.hear() == "* alice is now known as ALICE"
            assert await newcomer.hear() == "* alice is now known as ALICE"
            # A nick freed by a rename can be taken at once, from the other process.
            await alice.say("/nick dora")
            assert await alice.hear() == "* ALICE is now known as dora"
            assert await newcomer.hear() == "* ALICE is now known as dora"
            late = await two.join("alice", here="carol, dora")
            assert await alice.hear() == "* alice joined"
            assert await newcomer.hear() == "* alice joined"
            await late.say("/who")
            assert await late.hear() == "* here: alice, carol, dora"


async def test_every_message_reaches_every_member_once_in_order(redis: RedisServer) -> None:
    messages = 30
    with trio.fail_after(TIMEOUT):
        async with rooms(redis, count=3) as servers:
            people: dict[str, Person] = {}
            for number, server in enumerate(servers):
                for seat in range(2):
                    nick = f"m{number}{seat}"
                    people[nick] = await server.arrive()
                    await people[nick].say(nick)
            # Everyone is in once the last has heard of nobody new: wait for the greetings.
            for nick, person in people.items():
                greeting = await person.hear()
                assert greeting.startswith(f"* hello {nick}; here: ")
            heard: dict[str, list[str]] = {nick: [] for nick in people}
            expected_lines = (len(people) - 1) * messages

            async def listen(nick: str, person: Person) -> None:
                while len([line for line in heard[nick] if line.startswith("<")]) < expected_lines:
                    heard[nick].append(await person.hear())

            async def talk(nick: str, person: Person) -> None:
                for number in range(messages):
                    await person.say(f"{number} from {nick}")

            async with trio.open_nursery() as nursery:
                for nick, person in people.items():
                    nursery.start_soon(listen, nick, person)
                    nursery.start_soon(talk, nick, person)
            for nick in people:
                lines = [line for line in heard[nick] if line.startswith("<")]
                for sender in people:
                    from_sender = [line for line in lines if line.startswith(f"<{sender}> ")]
                    wanted = (
                        []
                        if sender == nick
                        else [f"<{sender}> {n} from {sender}" for n in range(messages)]
                    )
                    assert from_sender == wanted, (nick, sender)
                notices = [line for line in heard[nick] if not line.startswith("<")]
                assert all(line.endswith(" joined") for line in notices), notices
            # Nothing more arrives: no duplicates were on their way.
            for person in people.values():
                await person.say("/who")
                assert await person.hear() == "* here: m00, m01, m10, m11, m20, m21"


async def test_lines_from_the_channel_are_escaped_and_garbage_is_ignored(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with rooms(redis, count=1) as (one,):
            alice = await one.join("alice")
            # Another program publishes on the room's channel (Redis is shared).
            assert isinstance(one.room, RedisRoom)
            channel = one.room.channel
            redis.command("PUBLISH", channel, "not-json")
            redis.command("PUBLISH", channel, '{"line":"\\u001b[2Jwiped","from":""}')
            assert await alice.hear() == "\\x1b[2Jwiped"
    assert "ignoring a malformed message" in caplog.text


async def hear_until(person: Person, wanted: str, *, prefix: str = "") -> list[str]:
    """The lines *person* hears up to and including *wanted* (or one starting with *prefix*,
    if given)."""
    lines = [await person.hear()]
    while lines[-1] != wanted and not (prefix and lines[-1].startswith(prefix)):
        lines.append(await person.hear())
    return lines


async def test_the_room_survives_a_redis_restart(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with rooms(redis) as (one, two):
            alice = await one.join("alice")
            bob = await two.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            redis.kill()
            for person in (alice, bob):
                assert await person.hear() == "* lost touch with the room: reconnecting"
            await alice.say("into the void")
            assert await alice.hear() == "* not sent: the room's server cannot be reached"
            await bob.say("/who")
            assert await bob.hear() == "* the room cannot be reached right now: try again"
            redis.start()  # empty: the nicks are claimed again by the renewals
            for person in (alice, bob):
                heard = await hear_until(
                    person, "* reconnected to the room (anything said meanwhile is lost)"
                )
                assert set(heard) <= {
                    "* alice is back",
                    "* bob is back",
                    "* reconnected to the room (anything said meanwhile is lost)",
                }
            # Talk again: once bob's process is subscribed, alice's lines reach him.
            for attempt in itertools.count():
                await alice.say(f"hello again {attempt}")
                with trio.move_on_after(0.5):
                    heard = await hear_until(bob, f"<alice> hello again {attempt}")
                    break
            # Both nicks are back in the room (the renewer runs every ttl/3).
            while True:
                await bob.say("/who")
                heard = await hear_until(bob, "* here: alice, bob", prefix="* here: ")
                if heard[-1] == "* here: alice, bob":
                    break
                await trio.sleep(0.1)
            late = await one.arrive()
            await late.say("bob")
            assert await late.hear() == "* bob is taken, try another"


async def test_an_unreachable_redis_is_reported_on_entry() -> None:
    with trio.fail_after(TIMEOUT):
        url = f"redis://127.0.0.1:{free_port()}/0"
        with pytest.raises(RoomUnavailableError, match=f"cannot reach Redis at {url}: "):
            async with open_redis_room(url):
                pass  # pragma: no cover


async def test_a_failing_write_costs_that_line_only(
    redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(TIMEOUT):
        async with rooms(redis) as (one, two):
            alice = await one.join("alice")
            bob = await two.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            assert isinstance(one.room, RedisRoom)
            client = one.room.client
            real_publish = client.publish

            def broken_publish(channel: str, message: str) -> object:
                if "boom" in message:
                    raise RuntimeError("a bug in a write")
                return real_publish(channel, message)

            monkeypatch.setattr(client, "publish", broken_publish)
            await alice.say("boom")
            await alice.say("still here")
            assert await bob.hear() == "<alice> still here"
    assert "a write to Redis failed" in caplog.text


def test_the_worker_task_tree_picture_names_the_real_tasks() -> None:
    svg = Path(__file__).parent.parent / "docs" / "_static" / "worker-task-tree.svg"
    root = ET.parse(svg).getroot()
    text = " ".join("".join(element.itertext()) for element in root.iter())
    for task in ("subscriber", "outbox", "renewer", "reaper"):  # RedisRoom's task methods
        assert f"task: {task}" in text
        assert callable(getattr(RedisRoom, task))
    for name in ("open_redis_room", "serve_listeners", "shutdown_event", "SO_REUSEPORT"):
        assert name in text


async def test_a_member_faster_than_redis_waits_its_turn_and_is_told_when_too_long(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_redis, "_OUTBOX_SIZE", 1)
    monkeypatch.setattr(chat_redis, "_QUEUE_TIMEOUT", 0.5)
    with trio.fail_after(TIMEOUT):
        async with rooms(redis) as (one, two):
            alice = await one.join("alice")
            bob = await two.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            assert isinstance(one.room, RedisRoom)
            client = one.room.client
            real_publish = client.publish
            slow = trio.Event()

            async def slow_publish(channel: str, message: str) -> object:
                if "slowly" in message:
                    await slow.wait()  # Redis stops answering
                return await real_publish(channel, message)

            monkeypatch.setattr(client, "publish", slow_publish)
            await alice.say("slowly 0")  # being written: Redis does not answer
            # A join waits its turn in the outbox; past the bound, carol is told and her join
            # is skipped when its turn comes (it stays queued until then).
            carol = await one.arrive()
            await carol.say("carol")
            assert await carol.hear() == "* the room cannot be reached right now: try again"
            # The outbox is full: alice's next line waits for room, and past the bound she is
            # told; her connection read nothing more meanwhile.
            await alice.say("slowly 1")
            assert await alice.hear() == "* not sent: the room is too busy, try again"
            await alice.say("slowly 2")
            slow.set()
            assert await bob.hear() == "<alice> slowly 0"
            assert await bob.hear() == "<alice> slowly 2"
            await carol.say("carol")  # her skipped join claimed nothing
            assert await carol.hear() == "* hello carol; here: alice, bob"

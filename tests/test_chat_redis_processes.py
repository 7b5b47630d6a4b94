"""The chat room on Redis across real processes: killed ones, and ``--workers N`` on one port.

Every server here is ``python -m trio_chat.demos.chat_room --redis URL`` (or ``python -m
trio_chat chat``) with a nick TTL of two seconds, so a killed process's members are announced
gone within about three seconds.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import trio
from chat_clients import Person, Visitors
from redis_server import RedisServer, redis_server
from server_process import ServerProcess
from worker_helpers import reserved_port, wait_for_stderr

# Server and worker processes, timing on a shared machine: run once in CI (.ci/run).
pytestmark = pytest.mark.heavy

pytest.importorskip("coredis", reason="the Redis room needs coredis: pip install trio-chat[redis]")

# Seconds for a whole test: processes start in about half a second each; the rest is room for
# a loaded machine (a bound for hangs, not a speed check).
TIMEOUT = 100
NICK_TTL = "2"
ROOM = ["-m", "trio_chat.demos.chat_room", "--nick-ttl", NICK_TTL]


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def hear_all(person: Person, count: int) -> list[str]:
    return [await person.hear() for _ in range(count)]


async def test_the_members_of_a_killed_process_are_announced_gone(redis: RedisServer) -> None:
    with (
        ServerProcess([*ROOM, "--redis", redis.url, "--port", "0"]) as first,
        ServerProcess([*ROOM, "--redis", redis.url, "--port", "0"]) as second,
    ):
        one, two = Visitors(first.port()), Visitors(second.port())
        with trio.fail_after(TIMEOUT):
            alice = await one.join("alice")
            bob = await one.join("bob", here="alice")
            assert await alice.hear() == "* bob joined"
            carol = await two.join("carol", here="alice, bob")
            for person in (alice, bob):
                assert await person.hear() == "* carol joined"
            assert first.proc is not None
            first.proc.kill()  # no goodbye, no leave: only the nick keys' expiry tells
            await alice.hear_eof()
            await bob.hear_eof()
            gone = await hear_all(carol, 2)
            assert sorted(gone) == [
                "* alice left (connection lost)",
                "* bob left (connection lost)",
            ]
            await carol.say("/who")
            assert await carol.hear() == "* here: carol"
            dave = await two.join("alice", here="carol")  # the nick is free again
            assert await carol.hear() == "* alice joined"
            await dave.say("hi")
            assert await carol.hear() == "<alice> hi"
            await one.aclose()
            await two.aclose()


async def test_two_workers_on_one_port_share_the_room(redis: RedisServer) -> None:
    members = 16  # all on one worker: a chance of 2 in 65,536; the test holds either way
    messages = 5
    with (
        reserved_port() as port,
        ServerProcess(
            [*ROOM, "--redis", redis.url, "--port", str(port), "--workers", "2"]
        ) as server,
    ):
        for _ in range(2):
            server.wait_for(r"worker \d \(pid \d+\) serving")
        room = Visitors(port)
        with trio.fail_after(TIMEOUT):
            people: dict[str, Person] = {}
            for number in range(members):
                nick = f"m{number:02}"
                people[nick] = await room.arrive()
                await people[nick].say(nick)
                assert (await people[nick].hear()).startswith(f"* hello {nick}; here: ")
            for number, person in enumerate(people.values()):  # the later ones joined
                joined = await hear_all(person, members - 1 - number)
                assert joined == [f"* m{later:02} joined" for later in range(number + 1, members)]

            # Every message reaches every other member exactly once, in the order sent.
            async def talk(nick: str, person: Person) -> None:
                for count in range(messages):
                    await person.say(f"{count} from {nick}")

            async with trio.open_nursery() as nursery:
                for nick, person in people.items():
                    nursery.start_soon(talk, nick, person)
            for nick, person in people.items():
                heard = await hear_all(person, (members - 1) * messages)
                for sender in people:
                    from_sender = [line for line in heard if line.startswith(f"<{sender}> ")]
                    wanted = [f"<{sender}> {count} from {sender}" for count in range(messages)]
                    assert from_sender == ([] if sender == nick else wanted), (nick, sender)

            # Kill one worker: its members are cut off; the others hear them leave; the
            # supervisor starts a new worker in its place.
            victim_pid = int(wait_for_stderr(server, r"worker 0 started \(pid (\d+)\)")[1])
            os.kill(victim_pid, signal.SIGKILL)
            wait_for_stderr(server, "worker 0 exited with signal SIGKILL; restarting it")
            victims: list[str] = []
            survivors: list[str] = []
            for nick, person in people.items():
                await person.say("/who")
                line = await person.reader.line()
                (survivors if line.startswith(b"* here: ") else victims).append(nick)
            watcher = await room.arrive()  # on the surviving worker, or on the new one
            await watcher.say("watcher")
            assert (await watcher.hear()).startswith("* hello watcher; here: ")
            gone = sorted([await watcher.hear() for _ in victims])
            assert gone == [f"* {nick} left (connection lost)" for nick in sorted(victims)]
            for nick in survivors:
                heard = await hear_all(people[nick], len(victims) + 1)
                assert sorted(heard) == sorted(
                    ["* watcher joined"]
                    + [f"* {victim} left (connection lost)" for victim in victims]
                )

            # SIGINT: every worker says goodbye, and the supervisor exits cleanly.
            server.wait_for(r"worker 0 \(pid \d+\) serving")  # the replacement
            assert server.proc is not None
            server.proc.send_signal(signal.SIGINT)
            for person in [watcher, *(people[nick] for nick in survivors)]:
                assert await person.hear() == "* the server is shutting down"
                await person.hear_eof()
            await room.aclose()
        server.wait()
    assert server.returncode == 0
    assert "Traceback" not in server.stderr


def test_an_unreachable_redis_is_reported_plainly() -> None:
    with (
        reserved_port() as port,
        ServerProcess([*ROOM, "--redis", f"redis://127.0.0.1:{port}/0", "--port", "0"]) as server,
    ):
        server.wait()
    assert server.returncode == 1
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in server.stderr
    assert "Traceback" not in server.stderr


async def test_the_cli_serves_the_room_from_two_workers(redis: RedisServer) -> None:
    command = ["-m", "trio_chat", "chat", "--workers", "2", "--redis", redis.url]
    with reserved_port() as port, ServerProcess([*command, "--port", str(port)]) as server:
        banners = 0
        while banners < 2:  # one per worker (two may share a line: see worker_main's comment)
            banners += server.wait_for("trio_chat chat server").string.count("chat server")
        room = Visitors(port)
        with trio.fail_after(TIMEOUT):
            people = {}
            for number in range(6):
                nick = f"p{number}"
                people[nick] = await room.arrive()
                await people[nick].say(nick)
                assert (await people[nick].hear()).startswith(f"* hello {nick}; here: ")
            for number, person in enumerate(people.values()):
                await hear_all(person, 5 - number)  # the later ones joined
            for nick, person in people.items():
                await person.say(f"hi from {nick}")
            for nick, person in people.items():
                heard = sorted(await hear_all(person, 5))
                assert heard == [f"<{other}> hi from {other}" for other in people if other != nick]
            assert server.proc is not None
            server.proc.send_signal(signal.SIGINT)
            for person in people.values():
                assert await person.hear() == "* the server is shutting down"
                await person.hear_eof()
            await room.aclose()
        rest = server.wait()
    assert server.returncode == 0
    assert "stopped" in rest
    assert "Traceback" not in server.stderr


async def test_two_worker_processes_survive_a_redis_restart(redis: RedisServer) -> None:
    with (
        reserved_port() as port,
        ServerProcess(
            [*ROOM, "--redis", redis.url, "--port", str(port), "--workers", "2"]
        ) as server,
    ):
        for _ in range(2):
            server.wait_for(r"worker \d \(pid \d+\) serving")
        room = Visitors(port)
        with trio.fail_after(TIMEOUT):
            people = {}
            for number in range(8):  # on both workers, all but surely (2 in 256 otherwise)
                nick = f"r{number}"
                people[nick] = await room.arrive()
                await people[nick].say(nick)
                assert (await people[nick].hear()).startswith(f"* hello {nick}; here: ")
            for number, person in enumerate(people.values()):
                await hear_all(person, 7 - number)
            redis.kill()
            for person in people.values():
                assert await person.hear() == "* lost touch with the room: reconnecting"
            redis.start()  # empty: the renewals claim the nicks again ("* ... is back")
            reconnected = "* reconnected to the room (anything said meanwhile is lost)"
            for person in people.values():  # each worker says it once it is subscribed again
                while (line := await person.hear()) != reconnected:
                    assert line.endswith(" is back"), line
            for nick, person in people.items():
                await person.say(f"after the restart from {nick}")
            for nick, person in people.items():
                heard: list[str] = []
                while len(heard) < 7:
                    line = await person.hear()
                    if not line.endswith(" is back"):
                        heard.append(line)
                wanted = [f"<{o}> after the restart from {o}" for o in people if o != nick]
                assert sorted(heard) == wanted
            await room.aclose()
        server.stop()
    assert server.returncode == 0

"""trio_chat/_limits.py: what a peer is counted as, the default max_connections, and the
per-peer count (the serving tests drive them over sockets; these pin the rules)."""

from __future__ import annotations

import logging
import resource

import pytest
import trio
import trio.testing
from serving_helpers import capture_logs

from trio_chat._limits import PEER_WAIT, PeerLimit, default_max_connections, peer_key
from trio_chat._serve_log import ThrottledLog


@pytest.mark.parametrize(
    ("host", "prefix", "key"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),  # IPv4 on a dual-stack socket: counted as IPv4
        ("fe80::1%eth0", 64, "fe80::/64"),  # the zone is not part of the peer
        ("not an address", 64, "not an address"),
    ],
)
def test_peer_key(host: str, prefix: int, key: str) -> None:
    assert peer_key(host, prefix) == key


@pytest.mark.parametrize(
    ("soft", "expected"),
    [
        (1024, 1024 - 128),  # an eighth kept for other files
        (256, 256 - 64),  # macOS's default: at least 64 kept
        (65, 1),
        (20_000, 20_000 - 2_500),
        (resource.RLIM_INFINITY, (1 << 20) - (1 << 17)),  # "unlimited": Linux's ceiling
    ],
)
def test_default_max_connections_follows_the_open_file_limit(
    soft: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert default_max_connections() == expected


class Counted:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed = False

    def stream_closed(self) -> bool:
        return self.closed


async def test_a_closed_stream_frees_its_place_at_once() -> None:
    limit: PeerLimit[Counted] = PeerLimit(1, ThrottledLog(logging.getLogger("test")))
    first, second = Counted("10.0.0.1:1"), Counted("10.0.0.1:2")
    with trio.fail_after(5):
        assert await limit.admit(first, "10.0.0.1")
        first.closed = True  # its task has not released it yet, but its stream is closed
        assert await limit.admit(second, "10.0.0.1")


async def test_at_most_limit_newcomers_wait_then_they_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[bool] = []
    with capture_logs() as records, trio.fail_after(100):
        log = ThrottledLog(logging.getLogger("trio_chat"))
        limit: PeerLimit[Counted] = PeerLimit(2, log)
        holders = [Counted(f"10.0.0.1:{n}") for n in range(2)]
        for holder in holders:
            assert await limit.admit(holder, "10.0.0.1")
        start = trio.current_time()

        async def newcomer(n: int) -> None:
            results.append(await limit.admit(Counted(f"10.0.0.1:{10 + n}"), "10.0.0.1"))

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(newcomer, n)
            await trio.testing.wait_all_tasks_blocked()
            assert results == [False] * 3  # beyond the two that may wait: refused at once
            limit.release(holders[0], "10.0.0.1")  # one waiting newcomer gets its place
        assert sorted(results) == [False] * 4 + [True]
        assert trio.current_time() - start == pytest.approx(PEER_WAIT)  # the other waited
        assert limit.buckets["10.0.0.1"].waiting == 0
    refusals = [r.getMessage() for r in records if "refusing" in r.getMessage()]
    assert refusals[0].startswith("refusing connection from 10.0.0.1:1")  # the first in full

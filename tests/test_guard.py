"""Connection admission (server/guard.py): bounds in total and per address, the reserve for proven clients, and
the eviction that keeps a flood of unproven connections from shutting anyone out. Pure: connections are ints."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from livewatch.server.guard import ConnectionGuard, descriptor_budget, peer_key


def test_per_peer_and_total_bounds_without_unproven_connections_to_evict() -> None:
    guard = ConnectionGuard(total=4, per_peer=2, reserve=0)
    assert guard.acquire(1, "a").admitted and guard.acquire(2, "a").admitted
    assert guard.prove(1) and guard.prove(2) and not guard.prove(2)
    assert not guard.acquire(3, "a").admitted  # 'a' is at its bound and has nothing unproven to give up
    assert guard.acquire(4, "b").admitted and guard.prove(4)
    assert guard.acquire(5, "c").admitted and guard.prove(5)
    assert not guard.acquire(6, "d").admitted  # full of proven connections
    assert guard.refused == 2 and guard.open == 4
    guard.release(5)
    guard.release(5)  # twice: a no-op
    assert guard.acquire(6, "d").admitted and guard.open == 4


def test_a_flood_of_unproven_connections_leaves_the_reserve_and_every_newcomer_gets_in() -> None:
    guard = ConnectionGuard(total=10, per_peer=100, reserve=4)
    assert guard.unproven_limit == 6
    evicted = []
    for key in range(60):  # 9 flooding addresses, round robin
        adm = guard.acquire(key, f"10.0.0.{key % 9}")
        assert adm.admitted
        if adm.evict is not None:
            evicted.append(adm.evict)
    assert guard.unproven == 6 and guard.open == 6  # the reserve is untouched
    # the token's owner connects: admitted in place of a flooder's oldest, and proves itself
    adm = guard.acquire("owner", "127.0.0.1")
    assert adm.admitted and adm.evict is not None and adm.evict != "owner"
    assert guard.prove("owner")
    # once proven it is never evicted, however long the flood goes on
    for key in range(60, 500):
        assert guard.acquire(key, f"10.0.0.{key % 9}").admitted
    assert not guard.is_unproven("owner") and guard.open == 7
    # more proven clients fill the reserve, then the unproven places too: the flood never takes a proven place
    for i in range(3):
        assert guard.acquire(f"p{i}", f"127.0.0.{2 + i}").admitted and guard.prove(f"p{i}")
    assert guard.acquire(1000, "10.0.0.1").admitted
    assert guard.open == 10 and guard.unproven == 6  # 4 proven: the reserve; the flood holds the rest
    assert guard.acquire("p3", "127.0.0.9").evict is not None and guard.prove("p3")  # full: a flooder gives way
    assert guard.open == 10 and guard.unproven == 5


def test_the_address_holding_the_most_unproven_places_gives_one_up() -> None:
    guard = ConnectionGuard(total=6, per_peer=100, reserve=2)  # 4 unproven places
    for key in range(3):
        guard.acquire(key, "big")
    guard.acquire(3, "small")
    adm = guard.acquire(4, "new")
    assert adm.evict == 0  # the oldest of 'big', not 'small''s only one
    adm = guard.acquire(5, "small")
    assert adm.evict == 1  # 'big' (2) still holds more than 'small' would (2 -> tie goes to the newcomer's own)
    adm = guard.acquire(6, "small")
    assert adm.evict == 3  # now 'small' holds the most: its own oldest


def test_a_peer_at_its_bound_replaces_its_own_oldest_unproven_connection() -> None:
    guard = ConnectionGuard(total=100, per_peer=3, reserve=0)
    for key in range(3):
        guard.acquire(key, "a")
    guard.prove(0)
    assert guard.acquire(3, "a").evict == 1
    assert guard.acquire(4, "a").evict == 2
    assert guard.acquire(5, "a").evict == 3
    assert guard.open == 3


def test_the_reserve_is_at_most_half_of_the_total() -> None:
    assert ConnectionGuard(total=10, per_peer=1, reserve=100).unproven_limit == 5
    assert ConnectionGuard(total=1, per_peer=1, reserve=100).unproven_limit == 1
    assert descriptor_budget(1024, 512, 256) == 512 and descriptor_budget(300, 512, 256) == 44


def test_an_ipv6_host_counts_as_its_slash_64() -> None:
    """One host commonly holds a /64: its addresses one by one would be millions of shares of the places."""
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7" == peer_key("192.0.2.7")
    assert peer_key("fe80::1%eth0") == "fe80::/64" and peer_key("?") == "?"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acquire", "prove", "release"]), st.integers(0, 5), st.integers(0, 30)),
                max_size=200),
       st.integers(1, 12), st.integers(1, 6), st.integers(0, 8))
def test_bounds_hold_whatever_the_order_of_events(ops, total, per_peer, reserve) -> None:
    guard = ConnectionGuard(total, per_peer, reserve)
    live: dict[int, str] = {}
    proven: set[int] = set()
    counter = itertools.count()
    for op, peer_no, pick in ops:
        peer = f"p{peer_no}"
        if op == "acquire":
            key = next(counter)
            adm = guard.acquire(key, peer)
            if adm.evict is not None:
                assert adm.evict in live and adm.evict not in proven
                del live[adm.evict]
            if adm.admitted:
                live[key] = peer
        elif live:
            key = sorted(live)[pick % len(live)]
            if op == "prove":
                if guard.prove(key):
                    proven.add(key)
            else:
                guard.release(key)
                del live[key]
                proven.discard(key)
        assert guard.open == len(live) <= total
        assert guard.unproven == len(set(live) - proven) <= guard.unproven_limit
        for p in set(live.values()):
            assert sum(1 for v in live.values() if v == p) <= per_peer

"""acquire.lua: a slot with a lease, or a place in the tenant's line; the fair-share reserve; duplicates."""

from __future__ import annotations

import threading

import redis

from sandq.broker.keys import BATCH, INTERACTIVE, Keys
from tests.unit.broker.lua.conftest import ACQUIRED, DUPLICATE, LEASE, PARKED, REFUSED, Lua, entry, soon


def test_acquires_a_slot_with_a_lease_and_stops_counting_it_as_queued(lua: Lua) -> None:
    keys = lua.keys
    lua.admit("a1")
    assert lua.acquire("a1") == ACQUIRED
    low, high = soon(LEASE)
    assert low < (lua.score(keys.in_flight, "a1") or 0) < high
    assert lua.score(keys.in_flight_for("t"), "a1") == lua.score(keys.in_flight, "a1")
    assert lua.members(keys.queued) == lua.members(keys.queued_for("t")) == set()


def test_a_held_slot_is_acquired_again_with_a_fresh_lease(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("a1", cap=1) == ACQUIRED
    lua.raw.zadd(keys.in_flight, {"a1": float(lua.raw.time()[0]) + 1})
    assert lua.acquire("a1", cap=1) == ACQUIRED  # its own redelivery: the cap does not refuse it
    assert (lua.score(keys.in_flight, "a1") or 0) > soon(LEASE)[0]
    assert lua.raw.zcard(keys.in_flight) == 1


def test_the_global_cap_refuses_and_parks_nothing_without_an_entry(lua: Lua) -> None:
    keys = lua.keys
    assert [lua.acquire("a1", cap=1), lua.acquire("b1", "u", cap=1)] == [ACQUIRED, REFUSED]
    assert lua.members(keys.in_flight) == {"a1"}
    assert lua.members(keys.parked) == set() and lua.raw.hlen(keys.entries) == 0
    assert lua.line("u", INTERACTIVE) == [] and lua.members(keys.parked_tenants) == set()


def test_the_tenant_cap_refuses_only_that_tenant(lua: Lua) -> None:
    assert lua.acquire("a1", tenant_cap=1) == ACQUIRED
    assert lua.acquire("a2", tenant_cap=1) == REFUSED
    assert lua.acquire("b1", "u", tenant_cap=1) == ACQUIRED


def test_a_refused_execution_parks_in_the_line_of_its_lane(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("x", "z", cap=1) == ACQUIRED
    assert lua.park("b1", "t", "batch", cap=1) == PARKED
    first_parked = lua.score(keys.parked_tenants, "t")
    assert lua.park("i1", "t", "interactive", cap=1) == PARKED
    assert lua.line("t", BATCH) == ["b1"] and lua.line("t", INTERACTIVE) == ["i1"]
    assert lua.members(keys.parked) == {"b1", "i1"}
    assert lua.hget(keys.entries, "b1") == entry("t", "batch")
    assert lua.hget(keys.entries, "i1") == entry("t", "interactive")
    assert lua.score(keys.parked_tenants, "t") == first_parked  # parking again does not move the tenant
    assert lua.members(keys.in_flight) == {"x"}


def test_a_copy_of_a_parked_execution_is_a_duplicate(lua: Lua) -> None:
    assert lua.acquire("x", cap=1) == ACQUIRED
    assert lua.park("p", cap=1) == PARKED
    lua.release("x")
    assert lua.acquire("p", cap=1) == DUPLICATE  # its first message, redelivered: the parked copy rules
    assert lua.park("p", cap=1) == DUPLICATE
    assert lua.line("t", BATCH) == ["p"] and lua.members(lua.keys.in_flight) == set()


def test_no_new_execution_overtakes_a_parked_one(lua: Lua) -> None:
    lua.make_active("t", "u")  # with 1 slot, each one's share is 0: neither is below it
    assert lua.acquire("x", cap=1) == ACQUIRED
    assert lua.park("p", cap=1) == PARKED
    lua.release("x")  # the slot is free, but p is first in line
    assert lua.park("late", cap=1) == PARKED
    assert lua.acquire("other", "u", cap=1) == REFUSED  # nor one of another tenant
    assert lua.line("t", BATCH) == ["p", "late"]


def test_a_tenant_below_its_share_with_nothing_parked_goes_ahead(lua: Lua) -> None:
    lua.make_active("t", "u")  # two active tenants: each one's share of 2 slots is 1
    assert [lua.acquire("t1"), lua.acquire("t2")] == [ACQUIRED, ACQUIRED]
    assert lua.park("t3") == PARKED
    lua.release("t1")
    assert lua.acquire("u1", "u") == ACQUIRED  # u runs none, below its share: ahead of t3
    lua.release("t2")
    assert lua.park("u2", "u") == PARKED  # u runs its share now: behind t3


def test_a_tenant_below_its_share_waits_behind_its_own_parked_execution(lua: Lua) -> None:
    lua.make_active("t", "u")
    assert [lua.acquire("t1"), lua.acquire("t2")] == [ACQUIRED, ACQUIRED]
    assert lua.park("u1", "u") == PARKED
    lua.release("t1")
    assert lua.park("u2", "u") == PARKED  # below its share, but u1 is first in u's line
    assert lua.line("u", BATCH) == ["u1", "u2"]


def test_above_its_share_a_tenant_leaves_the_reserved_slots_to_the_others(lua: Lua) -> None:
    lua.make_active("t", "u")  # 10 slots, 2 reserved: each share is 5
    taken = [lua.acquire(f"t{i}", cap=10, reserved=2) for i in range(9)]
    assert taken == [ACQUIRED] * 8 + [REFUSED]  # the 9th would leave only 2 free
    taken = [lua.acquire(f"u{i}", "u", cap=10, reserved=2) for i in range(3)]
    assert taken == [ACQUIRED, ACQUIRED, REFUSED]  # below its share, u takes the reserve


def test_alone_a_tenant_may_take_every_slot(lua: Lua) -> None:
    lua.make_active("t")
    taken = [lua.acquire(f"t{i}", cap=10, reserved=2) for i in range(11)]
    assert taken == [ACQUIRED] * 10 + [REFUSED]


def test_an_expired_lease_gives_its_slot_back(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("dead", "z", cap=1) == ACQUIRED
    assert lua.acquire("a1", cap=1) == REFUSED
    lua.backdate(keys.in_flight, "dead")
    lua.backdate(keys.in_flight_for("z"), "dead")
    assert lua.acquire("a1", cap=1) == ACQUIRED
    assert lua.members(keys.in_flight) == {"a1"}
    assert lua.members(keys.in_flight_for("z")) == {"dead"}  # z's own set is pruned by z's next acquire
    assert lua.acquire("z1", "z", cap=2) == ACQUIRED
    assert lua.members(keys.in_flight_for("z")) == {"z1"}


def test_only_the_message_that_carries_the_claim_runs_a_handed_execution(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("x", cap=1) == ACQUIRED
    assert lua.park("p", cap=1) == PARKED
    lua.release("x")
    ((_, token, _),), _ = lua.hand_off(cap=1)
    assert lua.acquire("p", cap=1) == DUPLICATE  # the first message, redelivered late
    assert lua.acquire("p", cap=1, token="another-token") == DUPLICATE
    assert lua.members(keys.handing) == {"p"}  # still being sent
    assert lua.acquire("p", cap=1, token=token) == ACQUIRED
    assert lua.members(keys.handing) == set() and lua.raw.hlen(keys.handing_tokens) == 0
    assert lua.raw.hlen(keys.entries) == 0
    assert lua.acquire("p", cap=1, token=token) == ACQUIRED  # its own redelivery runs
    assert lua.members(keys.in_flight) == {"p"}


def test_an_expired_claim_no_longer_refuses_a_copy(lua: Lua) -> None:
    assert lua.acquire("x", cap=1) == ACQUIRED
    assert lua.park("p", cap=1) == PARKED
    lua.release("x")
    lua.hand_off(cap=1)
    lua.release("p")
    lua.backdate(lua.keys.claim_expiry, "p", 1)
    assert lua.acquire("p", cap=1) == ACQUIRED


def test_two_clients_racing_for_the_last_slot_exactly_one_wins(raw: redis.Redis, keys: Keys) -> None:
    port = raw.connection_pool.connection_kwargs["port"]
    racers = [Lua(redis.Redis(port=port), keys, cap=3) for _ in range(2)]
    assert [racers[0].acquire("held-1"), racers[0].acquire("held-2")] == [ACQUIRED, ACQUIRED]
    for round_ in range(30):
        verdicts: dict[str, int] = {}
        start = threading.Barrier(2)

        def race(lua: Lua, execution_id: str) -> None:
            start.wait()
            verdicts[execution_id] = lua.acquire(execution_id, execution_id[0])

        ids = [f"{who}{round_}" for who in "ab"]
        threads = [threading.Thread(target=race, args=pair) for pair in zip(racers, ids, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(verdicts.values()) == [ACQUIRED, REFUSED]
        (winner,) = [i for i, v in verdicts.items() if v == ACQUIRED]
        assert raw.zcard(keys.in_flight) == 3
        racers[0].release(winner, winner[0])

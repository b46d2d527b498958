"""renew.lua: a held slot's lease is extended; one taken back after expiry is not."""

from __future__ import annotations

from tests.unit.broker.lua.conftest import ACQUIRED, LEASE, Lua, soon


def renew(lua: Lua, execution_id: str, tenant: str = "t") -> bool:
    return lua.renew_script(execution_id=execution_id, tenant=tenant, lease_seconds=LEASE)


def test_renewing_a_held_slot_extends_its_lease_in_both_sets(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("a1", lease_seconds=5) == ACQUIRED
    assert (lua.score(keys.in_flight, "a1") or 0) < soon(LEASE)[0]
    assert renew(lua, "a1") is True
    low, high = soon(LEASE)
    assert low < (lua.score(keys.in_flight, "a1") or 0) < high
    assert lua.score(keys.in_flight_for("t"), "a1") == lua.score(keys.in_flight, "a1")


def test_a_lease_that_expired_and_was_taken_back_is_not_renewed(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("a1", cap=1) == ACQUIRED
    lua.backdate(keys.in_flight, "a1")
    lua.backdate(keys.in_flight_for("t"), "a1")
    assert lua.acquire("b1", "u", cap=1) == ACQUIRED  # collects the expired lease, takes the slot
    assert renew(lua, "a1") is False
    assert lua.members(keys.in_flight) == {"b1"}  # not counted again: the cap still holds
    assert (lua.score(keys.in_flight_for("t"), "a1") or 0) < soon(0)[0]  # nor extended in t's set


def test_a_lease_past_expiry_that_nothing_collected_still_holds_its_slot(lua: Lua) -> None:
    keys = lua.keys
    assert lua.acquire("a1", cap=1) == ACQUIRED
    lua.backdate(keys.in_flight, "a1", 1)
    assert renew(lua, "a1") is True  # no one was given the slot meanwhile
    assert (lua.score(keys.in_flight, "a1") or 0) > soon(LEASE)[0]
    assert lua.acquire("b1", "u", cap=1) != ACQUIRED


def test_an_execution_that_never_held_a_slot_is_not_renewed(lua: Lua) -> None:
    assert renew(lua, "ghost") is False
    assert lua.members(lua.keys.in_flight) == set() and lua.members(lua.keys.in_flight_for("t")) == set()

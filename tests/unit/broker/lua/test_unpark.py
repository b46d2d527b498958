"""unpark.lua: a cancelled parked execution leaves its line at once, without a slot, claimed."""

from __future__ import annotations

from sandq.broker.keys import BATCH, INTERACTIVE
from sandq.broker.scripts import Handed
from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, DUPLICATE, PARKED, Lua, entry


def unpark(lua: Lua, execution_id: str, tenant: str = "t") -> Handed | None:
    return lua.unpark_script(execution_id=execution_id, tenant=tenant, claim_seconds=CLAIM)


def park_two(lua: Lua) -> None:
    """x holds the one slot; p (batch) and q (interactive) of tenant t wait."""
    assert lua.acquire("x", "z", cap=1) == ACQUIRED
    assert [lua.park("p", cap=1), lua.park("q", priority="interactive", cap=1)] == [PARKED, PARKED]


def test_a_cancelled_execution_leaves_its_line_without_a_slot(lua: Lua) -> None:
    keys = lua.keys
    park_two(lua)
    assert lua.unpark_script.tenant_of("p") == "t"
    taken = unpark(lua, "p")
    assert taken is not None
    execution_id, token, parked = taken
    assert (execution_id, parked) == ("p", entry("t"))
    assert lua.members(keys.parked) == {"q"} and lua.line("t", BATCH) == []
    assert lua.line("t", INTERACTIVE) == ["q"] and lua.members(keys.parked_tenants) == {"t"}
    assert lua.members(keys.in_flight) == {"x"}  # it takes no slot
    assert lua.members(keys.handing) == {"p"}
    assert lua.hget(keys.handing_tokens, "p") == lua.hget(keys.claims, "p") == token
    assert lua.acquire("p", cap=1) == DUPLICATE  # a stale copy of its message never runs
    assert unpark(lua, "q") is not None
    assert lua.members(keys.parked_tenants) == set()  # t has nothing parked any more


def test_only_one_unpark_takes_it(lua: Lua) -> None:
    park_two(lua)
    assert unpark(lua, "p") is not None
    assert unpark(lua, "p") is None
    assert lua.members(lua.keys.handing) == {"p"}


def test_an_execution_not_parked_is_left_alone(lua: Lua) -> None:
    park_two(lua)
    assert lua.unpark_script.tenant_of("ghost") is None
    assert unpark(lua, "ghost") is None
    lua.release("x", "z")
    assert lua.handed_ids(cap=1) == ["q"]  # handed off: no longer parked, though its entry is kept
    assert unpark(lua, "q") is None
    assert lua.members(lua.keys.in_flight) == {"q"}


def test_a_tenant_that_is_not_the_executions_changes_nothing(lua: Lua) -> None:
    park_two(lua)
    assert unpark(lua, "p", "u") is None
    assert lua.members(lua.keys.parked) == {"p", "q"} and lua.line("t", BATCH) == ["p"]
    assert lua.members(lua.keys.handing) == set()

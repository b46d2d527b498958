"""handoff.lua: free slots go to parked executions, interactive first, then the tenant running the
fewest, ties to the one served longest ago; caps and the fair-share reserve hold; tenants not
passed wait for the next call."""

from __future__ import annotations

from sandq.broker.keys import BATCH, INTERACTIVE
from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, LEASE, PARKED, Lua, entry, soon


def fill(lua: Lua, *held: str) -> None:
    """Take a slot for each ``<tenant><n>`` id."""
    assert [lua.acquire(execution_id, execution_id[0]) for execution_id in held] == [ACQUIRED] * len(held)


def test_nothing_parked_or_no_free_slot_hands_nothing(lua: Lua) -> None:
    assert lua.hand_off() == ([], 0)
    fill(lua, "z1", "z2")
    assert lua.park("p1", "p") == PARKED
    assert lua.hand_off() == ([], 0)
    assert lua.members(lua.keys.parked) == {"p1"}


def test_a_handed_execution_takes_its_slot_leaves_its_line_and_is_claimed(lua: Lua) -> None:
    keys = lua.keys
    lua.admit("p1", "p")
    fill(lua, "z1", "z2")
    assert lua.park("p1", "p") == PARKED
    lua.release("z1", "z")
    ((execution_id, token, parked),), left_out = lua.hand_off()
    assert (execution_id, parked, left_out) == ("p1", entry("p"), 0)
    low, high = soon(LEASE)
    assert low < (lua.score(keys.in_flight, "p1") or 0) < high
    assert lua.score(keys.in_flight_for("p"), "p1") == lua.score(keys.in_flight, "p1")
    assert lua.members(keys.queued) == lua.members(keys.queued_for("p")) == set()
    assert lua.members(keys.parked) == set() and lua.line("p", BATCH) == []
    assert lua.members(keys.parked_tenants) == set()
    assert lua.members(keys.handing) == {"p1"}  # until its message is sent
    assert lua.hget(keys.handing_tokens, "p1") == lua.hget(keys.claims, "p1") == token
    low, high = soon(CLAIM)
    assert low < (lua.score(keys.claim_expiry, "p1") or 0) < high
    assert lua.hget(keys.entries, "p1") == entry("p")


def test_interactive_lines_go_before_batch_lines(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert lua.park("b1", "b", "batch") == PARKED
    assert lua.park("i1", "i", "interactive") == PARKED
    lua.release("z1", "z")
    assert lua.handed_ids() == ["i1"]
    lua.release("z2", "z")
    assert lua.handed_ids() == ["b1"]


def test_the_tenant_running_the_fewest_goes_first(lua: Lua) -> None:
    lua.cap = 3
    fill(lua, "a1", "a2", "b1")
    assert [lua.park("a3", "a"), lua.park("b2", "b"), lua.park("c1", "c")] == [PARKED] * 3
    lua.release("a1", "a")
    assert lua.handed_ids() == ["c1"]  # c runs none (a runs 1, b runs 1)
    lua.release("a2", "a")
    assert lua.handed_ids() == ["a3"]  # a runs none now, b and c one each
    lua.release("c1", "c")
    assert lua.handed_ids() == ["b2"]


def test_ties_go_to_the_tenant_served_longest_ago(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert [lua.park("a1", "a"), lua.park("a2", "a"), lua.park("b1", "b")] == [PARKED] * 3
    lua.release("z1", "z")
    assert lua.handed_ids() == ["a1"]  # both run none; a parked first
    lua.release("a1", "a")
    assert lua.handed_ids() == ["b1"]  # both run none; a was served since
    lua.release("b1", "b")
    assert lua.handed_ids() == ["a2"]


def test_each_call_hands_out_at_most_most_and_a_line_keeps_its_order(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert [lua.park(f"p{i}", "p") for i in range(4)] == [PARKED] * 4
    lua.release("z1", "z")
    lua.release("z2", "z")
    handed, _ = lua.hand_off(cap=10, most=3)
    assert [h[0] for h in handed] == ["p0", "p1", "p2"]
    assert len({token for _, token, _ in handed}) == 3  # one token per message
    assert lua.handed_ids(cap=10) == ["p3"]


def test_a_tenant_at_its_cap_gets_no_slot(lua: Lua) -> None:
    lua.cap = 3
    fill(lua, "t1")
    assert lua.park("t2", tenant_cap=1) == PARKED
    assert lua.hand_off({"t": 1}) == ([], 0)
    assert lua.handed_ids(tenants={"t": 2}) == ["t2"]


def test_above_its_share_a_tenant_leaves_the_reserve_to_the_others(lua: Lua) -> None:
    lua.cap, reserved = 10, 2
    lua.make_active("t", "u")  # each share is 5
    assert [lua.park(f"t{i}", reserved=reserved) for i in range(9)] == [ACQUIRED] * 8 + [PARKED]
    assert lua.hand_off(reserved=reserved) == ([], 0)  # t runs 8: 2 free is the reserve
    fill(lua, "u1", "u2")  # below its share, u takes the reserve (nothing of u's is parked)
    assert lua.park("u3", "u", reserved=reserved) == PARKED
    lua.release("u1", "u")
    assert lua.handed_ids(reserved=reserved) == ["u3"]  # u is below its share: the reserve is for it
    lua.release("t0")
    assert lua.hand_off(reserved=reserved) == ([], 0)  # 1 free, within the reserve: t8 waits
    lua.release("t1")
    lua.release("t2")
    assert lua.handed_ids(reserved=reserved) == ["t8"]  # 3 free: one more for t


def test_a_tenant_not_passed_waits_for_the_next_call(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert lua.park("b1", "b", "interactive") == PARKED
    assert lua.park("a1", "a") == PARKED
    lua.release("z1", "z")
    lua.release("z2", "z")
    handed, left_out = lua.hand_off({"a": 100, "gone": 100})  # read before b parked; gone has left
    assert ([h[0] for h in handed], left_out) == (["a1"], 1)  # a slot is left for b, at the next call
    assert lua.line("b", INTERACTIVE) == ["b1"] and lua.members(lua.keys.parked_tenants) == {"b"}
    assert lua.handed_ids(tenants={"b": 100}) == ["b1"]


def test_no_tenant_counts_as_left_out_when_no_slot_is_left(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert [lua.park("a1", "a"), lua.park("b1", "b")] == [PARKED] * 2
    lua.release("z1", "z")
    handed, left_out = lua.hand_off({"a": 100})
    assert ([h[0] for h in handed], left_out) == (["a1"], 0)


def test_slots_of_expired_leases_are_handed_out(lua: Lua) -> None:
    fill(lua, "z1", "z2")
    assert lua.park("p1", "p") == PARKED
    lua.backdate(lua.keys.in_flight, "z1")
    assert lua.handed_ids() == ["p1"]
    assert lua.members(lua.keys.in_flight) == {"z2", "p1"}

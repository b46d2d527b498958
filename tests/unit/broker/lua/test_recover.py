"""recover.lua: a hand-off no worker claimed is sent again under a new token; expired claims go."""

from __future__ import annotations

from sandq.broker.scripts import Handed
from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, DUPLICATE, PARKED, Lua, entry, soon


def recover(lua: Lua, stale_seconds: float = 30, most_forgotten: int = 100) -> list[Handed]:
    return lua.recover_script(stale_seconds=stale_seconds, claim_seconds=CLAIM, most_forgotten=most_forgotten)


def handed_token(lua: Lua, execution_id: str = "p") -> str:
    """Park ``execution_id`` behind a held slot, free the slot, hand it off; its token."""
    assert lua.acquire(f"x-{execution_id}", "z", cap=1) == ACQUIRED
    assert lua.park(execution_id, cap=1) == PARKED
    lua.release(f"x-{execution_id}", "z")
    ((_, token, _),), _ = lua.hand_off(cap=1)
    return token


def test_a_fresh_hand_off_is_left_alone(lua: Lua) -> None:
    token = handed_token(lua)
    assert recover(lua) == []
    assert lua.hget(lua.keys.handing_tokens, "p") == lua.hget(lua.keys.claims, "p") == token


def test_a_stale_hand_off_is_sent_again_and_its_claim_moves_to_the_new_token(lua: Lua) -> None:
    keys = lua.keys
    first = handed_token(lua)
    lua.backdate(keys.handing, "p", 31)  # its sender died before sending it
    ((execution_id, token, parked),) = recover(lua)
    assert (execution_id, parked) == ("p", entry("t")) and token != first
    assert lua.hget(keys.handing_tokens, "p") == lua.hget(keys.claims, "p") == token
    low, high = soon(0)
    assert low < (lua.score(keys.handing, "p") or 0) < high
    assert recover(lua) == []  # sent again just now: not stale
    assert lua.acquire("p", token=first, cap=1) == DUPLICATE
    assert lua.acquire("p", token=token, cap=1) == ACQUIRED
    assert recover(lua) == [] and lua.raw.hlen(keys.entries) == 0  # claimed: nothing left to send


def test_expired_claims_are_forgotten_at_most_so_many_per_call(lua: Lua) -> None:
    keys = lua.keys
    for execution_id in ("p", "q", "r"):
        handed_token(lua, execution_id)
        lua.acquire(execution_id, cap=1, token=lua.hget(keys.claims, execution_id))
        lua.release(execution_id)
    lua.backdate(keys.claim_expiry, "p")
    lua.backdate(keys.claim_expiry, "q")
    assert recover(lua, most_forgotten=1) == []
    assert lua.raw.hlen(keys.claims) == 2 and lua.raw.zcard(keys.claim_expiry) == 2
    assert recover(lua, most_forgotten=1) == []
    assert set(lua.raw.hkeys(keys.claims)) == {b"r"} and lua.members(keys.claim_expiry) == {"r"}

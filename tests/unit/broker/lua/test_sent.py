"""sent.lua: a hand-off is forgotten once its message is sent, unless claimed or sent again since."""

from __future__ import annotations

from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, PARKED, Lua


def hand_off_p(lua: Lua) -> str:
    assert lua.acquire("x", "z", cap=1) == ACQUIRED
    assert lua.park("p", cap=1) == PARKED
    lua.release("x", "z")
    ((_, token, _),), _ = lua.hand_off(cap=1)
    return token


def test_a_sent_hand_off_is_forgotten_but_its_claim_kept(lua: Lua) -> None:
    keys = lua.keys
    token = hand_off_p(lua)
    lua.sent_script(execution_id="p", token=token)
    assert lua.members(keys.handing) == set() and lua.raw.hlen(keys.handing_tokens) == 0
    assert lua.raw.hlen(keys.entries) == 0
    assert lua.hget(keys.claims, "p") == token  # still the only message allowed to run it


def test_a_hand_off_sent_again_under_another_token_is_kept(lua: Lua) -> None:
    keys = lua.keys
    first = hand_off_p(lua)
    lua.backdate(keys.handing, "p", 60)
    ((_, again, _),) = lua.recover_script(stale_seconds=30, claim_seconds=CLAIM, most_forgotten=100)
    lua.sent_script(execution_id="p", token=first)  # the first sender, late
    assert lua.members(keys.handing) == {"p"} and lua.hget(keys.handing_tokens, "p") == again
    assert lua.hget(keys.entries, "p") is not None


def test_a_claimed_hand_off_stays_claimed(lua: Lua) -> None:
    keys = lua.keys
    token = hand_off_p(lua)
    assert lua.acquire("p", cap=1, token=token) == ACQUIRED  # a worker got it before the send returned
    lua.sent_script(execution_id="p", token=token)
    assert lua.members(keys.handing) == set() and lua.hget(keys.claims, "p") == token
    assert lua.members(keys.in_flight) == {"p"}

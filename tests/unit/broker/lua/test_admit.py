"""admit.lua: the caps on queued executions, counted by id, healed by expiry."""

from __future__ import annotations

import threading

import redis

from sandq.broker.keys import Keys
from tests.unit.broker.lua.conftest import Lua, soon

NEW, CAP_REACHED, TENANT_CAP_REACHED, ALREADY, NEW_TENANT = 0, 1, 2, 3, 4


def test_admits_and_says_which_execution_is_a_tenants_first(lua: Lua) -> None:
    keys = lua.keys
    assert [lua.admit("a1"), lua.admit("a2"), lua.admit("b1", "u")] == [NEW_TENANT, NEW, NEW_TENANT]
    assert lua.members(keys.queued) == {"a1", "a2", "b1"}
    assert lua.members(keys.queued_for("t")) == {"a1", "a2"}
    assert lua.members(keys.queued_for("u")) == {"b1"}
    assert lua.members(keys.tenants) == {"t", "u"}
    assert lua.members(keys.active) == {"t", "u"}
    low, high = soon(600)
    assert low < (lua.score(keys.queued, "a1") or 0) < high  # scored by its expiry


def test_an_id_queued_or_running_is_not_counted_twice(lua: Lua) -> None:
    assert lua.admit("a1") == NEW_TENANT
    assert lua.admit("a1") == ALREADY
    assert lua.acquire("r") == 0
    assert lua.admit("r") == ALREADY
    assert lua.members(lua.keys.queued) == {"a1"}


def test_the_global_cap_refuses_and_counts_nothing(lua: Lua) -> None:
    assert [lua.admit("a1", cap=2), lua.admit("a2", cap=2)] == [NEW_TENANT, NEW]
    assert lua.admit("v1", "v", cap=2) == CAP_REACHED
    assert lua.members(lua.keys.queued) == {"a1", "a2"}
    assert lua.members(lua.keys.queued_for("v")) == set()
    assert lua.members(lua.keys.tenants) == {"t"}  # v was refused: not a tenant yet
    assert lua.members(lua.keys.active) == {"t"}


def test_the_tenant_cap_refuses_only_that_tenant(lua: Lua) -> None:
    assert lua.admit("a1", tenant_cap=1) == NEW_TENANT
    assert lua.admit("a2", tenant_cap=1) == TENANT_CAP_REACHED
    assert lua.admit("b1", "u", tenant_cap=1) == NEW_TENANT
    assert lua.members(lua.keys.queued) == {"a1", "b1"}


def test_an_expired_entry_stops_counting(lua: Lua) -> None:
    keys = lua.keys
    assert lua.admit("a1", cap=1) == NEW_TENANT
    assert lua.admit("a2", cap=1) == CAP_REACHED
    lua.backdate(keys.queued, "a1")  # as if its message had been lost long ago
    lua.backdate(keys.queued_for("t"), "a1")
    assert lua.admit("a2", cap=1) == NEW
    assert lua.members(keys.queued) == lua.members(keys.queued_for("t")) == {"a2"}


def test_a_tenant_stops_counting_as_active_after_active_seconds(lua: Lua) -> None:
    keys = lua.keys
    lua.admit("old1", "old")
    lua.backdate(keys.active, "old", 61)
    lua.admit("a1", active_seconds=60)
    assert lua.members(keys.active) == {"t"}
    assert lua.members(keys.tenants) == {"old", "t"}  # its queue is still known


def test_concurrent_admissions_never_pass_the_cap(raw: redis.Redis, keys: Keys) -> None:
    verdicts: list[int] = []
    start = threading.Barrier(8)

    def submit(thread: int) -> None:
        lua = Lua(redis.Redis(port=raw.connection_pool.connection_kwargs["port"]), keys)
        start.wait()
        for i in range(10):
            verdicts.append(lua.admit(f"{thread}-{i}", f"t{thread}", cap=5))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(verdicts) == 80
    assert sum(v in (NEW, NEW_TENANT) for v in verdicts) == 5
    assert verdicts.count(CAP_REACHED) == 75
    assert raw.zcard(keys.queued) == 5

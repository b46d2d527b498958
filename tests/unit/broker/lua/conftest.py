"""Each Lua script through its wrapper, against the session's real redis-server, in a fresh namespace.

``Lua`` holds one deployment's scripts with small defaults (override any argument by name) and
reads its keys back; it sets state only through the scripts, except for moving scores into the
past (an expired lease, a stale hand-off, an expired claim) instead of sleeping.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from sandq.broker.keys import BATCH, INTERACTIVE, Keys, Lane
from sandq.broker.routing import Priority
from sandq.broker.scripts import (
    AcquireScript,
    AdmitScript,
    Handed,
    HandoffScript,
    RecoverScript,
    RenewScript,
    SentScript,
    UnparkScript,
)
from sandq.broker.slots import Parked
from tests.conftest import RedisServer

ACQUIRED, PARKED, REFUSED, DUPLICATE = 0, 1, 2, 3
LEASE, CLAIM, ACTIVE = 30.0, 600, 60.0


def entry(tenant: str, priority: Priority = "batch") -> str:
    """A parked entry as the worker stores it."""
    return Parked(tenant, {"id": "x", "code": "pass"}, f"q.{tenant}", priority, 0).to_json()


class Lua:
    """One deployment's scripts, with defaults: global cap ``cap``, no per-tenant cap, no reserve."""

    def __init__(self, client: redis.Redis, keys: Keys, cap: int = 2) -> None:
        self.raw, self.keys, self.cap = client, keys, cap
        self.admit_script = AdmitScript(client, keys)
        self.acquire_script = AcquireScript(client, keys)
        self.renew_script = RenewScript(client, keys)
        self.handoff_script = HandoffScript(client, keys)
        self.recover_script = RecoverScript(client, keys)
        self.unpark_script = UnparkScript(client, keys)
        self.sent_script = SentScript(client, keys)

    def admit(self, execution_id: str, tenant: str = "t", **given: Any) -> int:
        args: dict[str, Any] = {"ttl_seconds": 600, "cap": 100, "tenant_cap": 100, "active_seconds": ACTIVE}
        return self.admit_script(execution_id=execution_id, tenant=tenant, **(args | given))

    def acquire(self, execution_id: str, tenant: str = "t", **given: Any) -> int:
        """Acquire without parking (REFUSED at a cap)."""
        args: dict[str, Any] = {
            "lease_seconds": LEASE, "cap": self.cap, "tenant_cap": 100, "token": "", "entry": None,
            "lane": INTERACTIVE, "active_seconds": ACTIVE, "reserved": 0,
        }
        return self.acquire_script(execution_id=execution_id, tenant=tenant, **(args | given))

    def park(self, execution_id: str, tenant: str = "t", priority: Priority = "batch", **given: Any) -> int:
        """Acquire, or park at a cap (PARKED)."""
        lane: Lane = INTERACTIVE if priority == "interactive" else BATCH
        return self.acquire(execution_id, tenant, entry=entry(tenant, priority), lane=lane, **given)

    def hand_off(self, tenants: dict[str, int] | None = None, **given: Any) -> tuple[list[Handed], int]:
        """Hand off to the parked tenants read now (each with cap 100), unless ``tenants`` are given."""
        if tenants is None:
            tenants = {tenant: 100 for tenant in self.handoff_script.parked_tenants()}
        args: dict[str, Any] = {
            "lease_seconds": LEASE, "cap": self.cap, "most": 100, "claim_seconds": CLAIM,
            "active_seconds": ACTIVE, "reserved": 0,
        }
        return self.handoff_script(tenants=tenants, **(args | given))

    def handed_ids(self, **given: Any) -> list[str]:
        handed, _ = self.hand_off(**given)
        return [execution_id for execution_id, _, _ in handed]

    def release(self, execution_id: str, tenant: str = "t") -> None:
        """What ``InFlight.release`` does (no script)."""
        self.raw.zrem(self.keys.in_flight, execution_id)
        self.raw.zrem(self.keys.in_flight_for(tenant), execution_id)

    def make_active(self, *tenants: str) -> None:
        """Admit one execution of each tenant, so that each counts as active."""
        for tenant in tenants:
            self.admit(f"{tenant}-admitted", tenant)

    def backdate(self, key: str, member: str, seconds: float = 100) -> None:
        """Move ``member``'s score ``seconds`` into the past (an expiry or a time it happened)."""
        self.raw.zadd(key, {member: time.time() - seconds})

    def members(self, key: str) -> set[str]:
        """The members of a set or sorted set, as text."""
        raw = self.raw.zrange(key, 0, -1) if self.raw.type(key) == b"zset" else self.raw.smembers(key)
        return {m.decode() for m in raw}

    def line(self, tenant: str, lane: Lane) -> list[str]:
        return [m.decode() for m in self.raw.lrange(self.keys.parked_for(tenant, lane), 0, -1)]

    def score(self, key: str, member: str) -> float | None:
        value = self.raw.zscore(key, member)
        return None if value is None else float(value)

    def hget(self, key: str, field: str) -> str | None:
        value = self.raw.hget(key, field)
        return None if value is None else value.decode()


@pytest.fixture
def raw(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis(port=redis_server.port)


@pytest.fixture
def keys() -> Keys:
    return Keys(f"unit-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def lua(raw: redis.Redis, keys: Keys) -> Lua:
    return Lua(raw, keys)


def soon(seconds: float) -> tuple[float, float]:
    """Bounds of a score set ``seconds`` from now by a script that ran a moment ago."""
    now = time.time()
    return now + seconds - 5, now + seconds + 0.1

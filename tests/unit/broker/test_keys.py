"""Key names: one prefix with the queue as a Redis Cluster hash tag, and no two names alike."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from sandq.broker.keys import BATCH, INTERACTIVE, LANES, Keys


def all_names(keys: Keys, tenants: tuple[str, ...], ids: tuple[str, ...]) -> list[str]:
    fixed = [value for name, value in vars(keys).items() if name not in {"namespace", "prefix"}]
    per_tenant = [key for t in tenants for key in (
        keys.queued_for(t), keys.in_flight_for(t), *(keys.parked_for(t, lane) for lane in LANES))]
    return fixed + per_tenant + [keys.cancel_marker(i) for i in ids]


def test_the_names_of_a_deployment() -> None:
    keys = Keys("sandq")
    assert (keys.queued, keys.in_flight, keys.parked, keys.parked_tenants, keys.entries) == (
        "sandq:{sandq}:queued", "sandq:{sandq}:inflight", "sandq:{sandq}:parked",
        "sandq:{sandq}:parked:tenants", "sandq:{sandq}:parked:entries",
    )
    assert (keys.handing, keys.handing_tokens, keys.claims, keys.claim_expiry) == (
        "sandq:{sandq}:handing", "sandq:{sandq}:handing:tokens", "sandq:{sandq}:claims",
        "sandq:{sandq}:claims:expiry",
    )
    assert (keys.active, keys.tenants, keys.cancel_channel, keys.simulated_runs) == (
        "sandq:{sandq}:active", "sandq:{sandq}:tenants", "sandq:{sandq}:cancel",
        "sandq:{sandq}:simulated:runs",
    )
    assert keys.queued_for("acme") == "sandq:{sandq}:queued:acme"
    assert keys.in_flight_for("acme") == "sandq:{sandq}:inflight:acme"
    assert (keys.parked_for("acme", INTERACTIVE), keys.parked_for("acme", BATCH)) == (
        "sandq:{sandq}:parked:acme:0", "sandq:{sandq}:parked:acme:1",
    )
    assert keys.cancel_marker("e-1") == "sandq:{sandq}:cancel:e-1"


@pytest.mark.parametrize("queue", ["sandq", "prod.eu", "q-1f2e", "with:colon", "a}b", "x{y}"])
def test_every_key_of_a_deployment_falls_in_one_slot(queue: str) -> None:
    names = all_names(Keys(queue), ("default", "acme", "tenants", "{other}"), ("e-1", "{x}"))
    assert all(name.startswith(f"sandq:{{{queue}}}:") for name in names)
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_no_two_keys_share_a_name_even_for_tenants_named_like_keys() -> None:
    tenants = ("default", "tenants", "entries", "expiry", "0", "1", "")
    names = all_names(Keys("sandq"), tenants, ("e-1", "runs"))
    assert len(names) == len(set(names))


def test_deployments_do_not_share_keys() -> None:
    first, second = (all_names(Keys(q), ("acme",), ("e-1",)) for q in ("a", "b"))
    assert not set(first) & set(second)

"""API keys: shown once, stored as an HMAC only, listed, revoked; bad keys all look alike."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from sandq.gateway.credentials import ApiKeys
from tests.integration.gateway.conftest import gateway_settings


@pytest.fixture
def keys(aredis: aioredis.Redis, namespace: str) -> ApiKeys:
    return ApiKeys(aredis, gateway_settings(), namespace)


async def stored_bytes(client: aioredis.Redis, namespace: str) -> bytes:
    """Every key name and value the gateway wrote under ``namespace``."""
    dump = b""
    async for name in client.scan_iter(match=f"sandq:{namespace}:*"):
        kind = await client.type(name)
        value = await client.hgetall(name) if kind == b"hash" else await client.smembers(name)
        dump += name + repr(value).encode()
    return dump


async def test_a_key_authenticates_as_its_tenant_and_is_stored_only_as_a_digest(
    keys: ApiKeys, aredis: aioredis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    new = await keys.create("acme")
    found = await keys.authenticate(new.token)

    assert found is not None and found.tenant == "acme" and found.key_id == new.record.key_id
    assert not found.revoked
    assert new.token.startswith(f"sq_{new.record.key_id}_")
    dump = await stored_bytes(aredis, namespace)
    assert new.record.key_id.encode() in dump
    assert new.token.split("_", 2)[2].encode() not in dump
    assert new.token not in repr(new) and new.token not in str(new)
    assert new.token not in caplog.text


async def test_wrong_unknown_malformed_and_revoked_keys_all_get_none(keys: ApiKeys) -> None:
    good = await keys.create("acme")
    revoked = await keys.create("acme")
    assert await keys.revoke(revoked.record.key_id)
    prefix, key_id, secret = good.token.split("_", 2)
    wrong_secret = f"{prefix}_{key_id}_{'A' * len(secret)}"
    unknown_id = f"{prefix}_{'0' * 16}_{secret}"

    answers = [await keys.authenticate(t) for t in (revoked.token, wrong_secret, unknown_id, "", "Bearer x")]

    assert answers == [None] * 5
    assert await keys.authenticate(good.token) is not None


async def test_another_server_secret_accepts_no_key(aredis: aioredis.Redis, namespace: str) -> None:
    new = await ApiKeys(aredis, gateway_settings(), namespace).create("acme")

    assert await ApiKeys(aredis, gateway_settings(), namespace).authenticate(new.token) is None


async def test_list_shows_every_key_with_its_tenant_and_revocation(keys: ApiKeys) -> None:
    first = await keys.create("acme")
    second = await keys.create("globex")
    await keys.revoke(first.record.key_id)

    listed = await keys.list_all()

    assert [(k.key_id, k.tenant, k.revoked) for k in listed] == [
        (first.record.key_id, "acme", True),
        (second.record.key_id, "globex", False),
    ]
    assert listed[0].revoked_at is not None and listed[0].created_at == first.record.created_at


async def test_revoking_an_unknown_key_says_so(keys: ApiKeys) -> None:

    assert not await keys.revoke("0123456789abcdef")
    assert await keys.list_all() == []


async def test_a_tenant_that_is_not_a_slug_is_refused(keys: ApiKeys) -> None:

    with pytest.raises(ValueError, match="slug"):
        await keys.create("Not A Slug")
    assert await keys.list_all() == []

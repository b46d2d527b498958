"""API keys: created for a tenant, shown once, stored only as an HMAC, revocable.

A key reads ``sq_<key id>_<secret>``: the id (64 random bits, not secret) finds the record, the
secret (256 random bits) proves possession. Redis holds HMAC-SHA256(server secret, key), never the
key. A slow KDF is not needed for keys this random (nothing to brute-force) and would cost every
request tens of milliseconds of CPU; the server secret also makes a copy of Redis useless alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

import redis.asyncio as aioredis
from pydantic import BaseModel

from sandq.contract import check_tenant
from sandq.gateway.redis_keys import GatewayKeys
from sandq.gateway.settings import GatewaySettings

TOKEN_PREFIX = "sq"  # noqa: S105 (the visible prefix of every key)
_TOKEN_RE = re.compile(r"^sq_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NO_DIGEST = "0" * 64


class ApiKey(BaseModel):
    """What is stored of one API key (the key itself is not)."""

    key_id: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        """True once the key is revoked."""
        return self.revoked_at is not None


class NewKey(BaseModel):
    """A key just created: ``token`` is shown to its owner once and kept nowhere."""

    record: ApiKey
    token: str

    def __repr__(self) -> str:
        return f"NewKey(record={self.record!r}, token=<hidden>)"

    __str__ = __repr__


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in raw.items()}


def _record(key_id: str, fields: dict[str, str]) -> ApiKey:
    revoked_at = fields.get("revoked_at")
    return ApiKey(
        key_id=key_id,
        tenant=fields["tenant"],
        created_at=datetime.fromisoformat(fields["created_at"]),
        revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
    )


class ApiKeys:
    """The API keys of one deployment, in Redis."""

    def __init__(self, redis: aioredis.Redis, settings: GatewaySettings, namespace: str) -> None:
        self.redis = redis
        self.keys = GatewayKeys(namespace)
        self._hmac_key = settings.subkey("api-key")

    def _digest(self, token: str) -> str:
        return hmac.new(self._hmac_key, token.encode(), hashlib.sha256).hexdigest()

    async def create(self, tenant: str) -> NewKey:
        """A new key for ``tenant``; its token is in the answer and nowhere else."""
        check_tenant(tenant)
        key_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id=key_id, tenant=tenant, created_at=datetime.now(UTC))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.api_key(key_id),
            mapping={
                "digest": self._digest(token),
                "tenant": tenant,
                "created_at": record.created_at.isoformat(),
            },
        )
        pipe.sadd(self.keys.api_key_ids, key_id)
        await pipe.execute()
        return NewKey(record=record, token=token)

    async def list_all(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        ids = sorted(_text(i) for i in await self.redis.smembers(self.keys.api_key_ids))
        pipe = self.redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(self.keys.api_key(key_id))
        found = [_record(i, _fields(raw)) for i, raw in zip(ids, await pipe.execute(), strict=True) if raw]
        return sorted(found, key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key at once; False if there is no such key."""
        if not await self.redis.exists(self.keys.api_key(key_id)):
            return False
        await self.redis.hsetnx(self.keys.api_key(key_id), "revoked_at", datetime.now(UTC).isoformat())
        return True

    async def authenticate(self, token: str) -> ApiKey | None:
        """The key ``token`` is, or None if it is malformed, unknown, wrong or revoked (alike)."""
        match = _TOKEN_RE.match(token)
        fields = _fields(await self.redis.hgetall(self.keys.api_key(match[1]))) if match else {}
        valid = hmac.compare_digest(self._digest(token), fields.get("digest", _NO_DIGEST))
        if not (match and valid) or fields.get("revoked_at"):
            return None
        return _record(match[1], fields)

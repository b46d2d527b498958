"""Each tenant's webhook secret: derived from the server secret, rotated by a generation number.

Redis holds only the generation and the end of the previous secret's grace period, never a
secret: ``whsec_`` + base64(HMAC-SHA256(server subkey, "<tenant>:<generation>")). After a
rotation, webhooks carry signatures by both secrets until the grace period ends, so a receiver
can switch to the new secret without losing a webhook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import redis.asyncio as aioredis

from sandq.gateway.redis_keys import GatewayKeys
from sandq.gateway.settings import GatewaySettings
from sandq.webhook_signature import SECRET_PREFIX


class WebhookSecrets:
    """The tenants' webhook secrets of one deployment."""

    def __init__(self, redis: aioredis.Redis, settings: GatewaySettings, namespace: str) -> None:
        self.redis = redis
        self.keys = GatewayKeys(namespace)
        self.grace_seconds = settings.webhook_secret_grace_seconds
        self._key = settings.subkey("webhook-secret")

    def _secret(self, tenant: str, generation: int) -> str:
        digest = hmac.new(self._key, f"{tenant}:{generation}".encode(), hashlib.sha256).digest()
        return SECRET_PREFIX + base64.b64encode(digest).decode("ascii")

    async def _state(self, tenant: str) -> tuple[int, float]:
        generation, previous_until = await self.redis.hmget(
            self.keys.webhook_secret(tenant), ["generation", "previous_until"]
        )
        return int(generation or 0), float(previous_until or 0)

    async def current(self, tenant: str) -> str:
        """The secret ``tenant`` verifies its webhooks with."""
        generation, _ = await self._state(tenant)
        return self._secret(tenant, generation)

    async def signing(self, tenant: str) -> list[str]:
        """The secrets that sign ``tenant``'s webhooks now: the current one, and the previous one in grace."""
        generation, previous_until = await self._state(tenant)
        current = [self._secret(tenant, generation)]
        in_grace = generation > 0 and time.time() < previous_until
        return [*current, self._secret(tenant, generation - 1)] if in_grace else current

    async def rotate(self, tenant: str) -> str:
        """A new secret for ``tenant``; the old one still signs for ``webhook_secret_grace_seconds``."""
        key = self.keys.webhook_secret(tenant)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "generation", 1)
        pipe.hset(key, "previous_until", time.time() + self.grace_seconds)
        generation, _ = await pipe.execute()
        return self._secret(tenant, int(generation))

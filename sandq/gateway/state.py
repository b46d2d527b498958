"""Everything one gateway process holds: its clients of Redis and the queue, and the stores over them."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request

from sandq.client.client import Client
from sandq.client.waiting import ResultWaiter
from sandq.gateway.batches import Batches
from sandq.gateway.completions import Completions
from sandq.gateway.credentials import ApiKeys
from sandq.gateway.rate_limit import KeyRateLimiter
from sandq.gateway.records import Records
from sandq.gateway.settings import GatewaySettings
from sandq.gateway.ssrf import TargetPolicy
from sandq.gateway.webhook_secrets import WebhookSecrets
from sandq.gateway.webhooks import Webhooks
from sandq.settings import Settings


@dataclass
class Gateway:
    """One gateway's resources; made at start-up, closed at shutdown."""

    settings: Settings
    config: GatewaySettings
    client: Client
    redis: aioredis.Redis
    api_keys: ApiKeys
    limiter: KeyRateLimiter
    webhooks: Webhooks
    secrets: WebhookSecrets
    waiter: ResultWaiter
    records: Records
    batches: Batches
    completions: Completions

    @classmethod
    def open(cls, settings: Settings, config: GatewaySettings, policy: TargetPolicy | None = None) -> Gateway:
        """Connect (lazily: nothing is contacted before the first request)."""
        client = Client(settings)
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=config.redis_max_connections, timeout=30
        )
        shared = aioredis.Redis(connection_pool=pool)
        namespace = settings.queue
        waiter = client.result_waiter()
        records = Records(shared, settings)
        batches = Batches(shared, records, waiter)
        webhooks = Webhooks(shared, config, namespace, policy=policy)
        completions = Completions(shared, config, records, batches, waiter, webhooks, client)
        return cls(
            settings=settings, config=config, client=client, redis=shared,
            api_keys=ApiKeys(shared, config, namespace),
            limiter=KeyRateLimiter(settings.redis_url, config.rate_limit, namespace),
            webhooks=webhooks, secrets=webhooks.secrets, waiter=waiter, records=records, batches=batches,
            completions=completions,
        )

    async def aclose(self) -> None:
        """Close every connection."""
        await self.webhooks.aclose()
        await self.waiter.aclose()
        await self.limiter.aclose()
        await self.redis.aclose()
        self.client.close()


async def gateway(request: Request) -> Gateway:
    """The gateway serving ``request`` (a FastAPI dependency; async, so that it takes no thread)."""
    found: Gateway = request.app.state.gateway
    return found

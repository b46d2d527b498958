"""The gateway's record of each execution it submitted: whose it is, whether it streams, its webhook.

Every ``{id}`` route reads the record first: an id without one, or another tenant's, answers 404
alike (tenant isolation). The gateway makes every id itself (uuid4), so that no tenant can pick,
guess or collide with another's. A record lives as long as its execution may stay queued and its
result be kept.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel

from sandq.gateway.redis_keys import GatewayKeys
from sandq.settings import Settings


class _Tenanted(Protocol):
    tenant: str


M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=_Tenanted)


def parsed(raw: bytes | str | None, model: type[M]) -> M | None:
    """``raw`` JSON as a ``model``, or None if nothing was stored."""
    return None if raw is None else model.model_validate_json(raw)


def of_tenant(found: R | None, tenant: str) -> R | None:
    """``found`` if it is ``tenant``'s, else None: what is unknown and what is another tenant's look alike."""
    return found if found is not None and found.tenant == tenant else None


class ExecutionRecord(BaseModel):
    """Who submitted an execution, and what the gateway does with it once it ends."""

    tenant: str
    stream_output: bool = False
    callback_url: str | None = None
    batch_id: str | None = None


class Records:
    """The execution records of one deployment."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = GatewayKeys(settings.queue)
        self.ttl_seconds = settings.queued_ttl_seconds + settings.result_ttl_seconds

    def write(self, pipe: aioredis.client.Pipeline, execution_id: str, record: ExecutionRecord) -> None:
        """Add the writing of ``record`` to ``pipe``."""
        pipe.set(self.keys.execution(execution_id), record.model_dump_json(), ex=self.ttl_seconds)

    async def create(self, execution_id: str, record: ExecutionRecord) -> None:
        """Record a new execution (before it is submitted)."""
        pipe = self.redis.pipeline(transaction=False)
        self.write(pipe, execution_id, record)
        if record.callback_url:
            pipe.zadd(self.keys.watched("callbacks"), {execution_id: 0})
        await pipe.execute()

    async def forget(self, execution_id: str) -> None:
        """Drop the record of an execution that was never submitted."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.execution(execution_id))
        pipe.zrem(self.keys.watched("callbacks"), execution_id)
        await pipe.execute()

    async def load(self, execution_id: str) -> ExecutionRecord | None:
        """The record of ``execution_id``, whoever's it is."""
        return parsed(await self.redis.get(self.keys.execution(execution_id)), ExecutionRecord)

    async def of(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        """``tenant``'s record of ``execution_id``, or None: unknown and another tenant's alike."""
        return of_tenant(await self.load(execution_id), tenant)

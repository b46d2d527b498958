"""Batches submitted through the gateway, kept in Redis so that any gateway replica serves them.

A batch is a hash (tenant, total, callback, and its ended executions counted by status), the list
of its execution ids in request order, the list of requests not yet admitted to the queue, and the
set of executions not yet ended. Each gateway's background loop (``sandq.gateway.completions``)
claims open batches one at a time, submits their waiting requests until a cap refuses one (then
waits its ``retry_after``), counts the executions that ended, and sends the batch's webhook once
all have.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, get_args

import redis.asyncio as aioredis
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from sandq.broker.errors import SubmissionRefused
from sandq.client.client import Client
from sandq.client.stored import chunked
from sandq.client.waiting import ResultWaiter
from sandq.contract import ExecutionRequest, ExecutionResult, Status
from sandq.gateway.records import ExecutionRecord, Records, of_tenant, parsed
from sandq.gateway.redis_keys import BatchPart, GatewayKeys
from sandq.gateway.scripts import batch_done

_STATUS = "status:"
"""Prefix of the batch hash's fields that count ended executions by status."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BatchRecord(BaseModel):
    """Who submitted a batch, how many requests it has, where its webhook goes."""

    tenant: str
    total: int
    callback_url: str | None = None


class Progress(BaseModel):
    """Where a batch stands."""

    total: int
    done: int
    unsubmitted: int
    by_status: dict[Status, int]


class Batches:
    """The gateway batches of one deployment."""

    def __init__(self, client: aioredis.Redis, records: Records, waiter: ResultWaiter) -> None:
        self.redis, self.records, self.waiter = client, records, waiter
        self.keys: GatewayKeys = records.keys
        self.ttl_seconds = records.ttl_seconds
        self._done = batch_done(client)

    async def create(
        self, record: BatchRecord, requests: Sequence[ExecutionRequest]
    ) -> tuple[str, list[str]]:
        """Store a batch of valid requests, all waiting to be submitted; its id, and its executions' ids."""
        batch_id = uuid.uuid4().hex
        ids = [uuid.uuid4().hex for _ in requests]
        keys, ttl = self.keys, self.ttl_seconds
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.batch(batch_id), "record", record.model_dump_json())
        pipe.rpush(keys.batch(batch_id, "ids"), *ids)
        unsent = [{"id": i, "request": r.model_dump(mode="json")} for i, r in zip(ids, requests, strict=True)]
        pipe.rpush(keys.batch(batch_id, "unsent"), *map(json.dumps, unsent))
        pipe.sadd(keys.batch(batch_id, "unfinished"), *ids)
        for part in get_args(BatchPart):
            pipe.expire(keys.batch(batch_id, part), ttl)
        for execution_id, request in zip(ids, requests, strict=True):
            self.records.write(pipe, execution_id, ExecutionRecord(
                tenant=record.tenant, stream_output=request.stream_output, batch_id=batch_id))
        pipe.zadd(keys.watched("batches-open"), {batch_id: 0})
        await pipe.execute()
        return batch_id, ids

    async def of(self, tenant: str, batch_id: str) -> BatchRecord | None:
        """``tenant``'s batch ``batch_id``, or None: unknown and another tenant's alike."""
        return of_tenant(await self.load(batch_id), tenant)

    async def load(self, batch_id: str) -> BatchRecord | None:
        """The batch ``batch_id``, whoever's it is."""
        return parsed(await self.redis.hget(self.keys.batch(batch_id), "record"), BatchRecord)

    async def progress(self, batch_id: str, record: BatchRecord) -> Progress:
        """How far the batch has come (as of the last look of a gateway's loop)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.batch(batch_id))
        pipe.scard(self.keys.batch(batch_id, "unfinished"))
        pipe.llen(self.keys.batch(batch_id, "unsent"))
        fields, unfinished, unsent = await pipe.execute()
        by_status: Counter[Status] = Counter()
        for name, count in fields.items():
            if _text(name).startswith(_STATUS):
                by_status[Status(_text(name).removeprefix(_STATUS))] = int(count)
        return Progress(total=record.total, done=record.total - unfinished, unsubmitted=unsent,
                        by_status=dict(by_status))

    async def results(self, batch_id: str) -> AsyncIterator[ExecutionResult]:
        """The results of the batch's ended executions, in the order of its requests."""
        ids = [_text(i) for i in await self.redis.lrange(self.keys.batch(batch_id, "ids"), 0, -1)]
        for chunk in chunked(ids):
            stored = await self.waiter.stored(*chunk)
            for execution_id in chunk:
                if execution_id in stored:
                    yield stored[execution_id]

    async def submit_waiting(self, batch_id: str, client: Client) -> float | None:
        """Submit the batch's waiting requests in order; the time to try again if a cap refused one."""
        key = self.keys.batch(batch_id, "unsent")
        while (raw := await self.redis.lindex(key, 0)) is not None:
            item: dict[str, Any] = json.loads(raw)
            try:
                await run_in_threadpool(client.submit, item["request"], execution_id=item["id"],
                                        priority="batch")
            except SubmissionRefused as refused:
                return time.time() + refused.retry_after
            await self.redis.lpop(key)
        return None

    async def count_ended(self, batch_id: str) -> int:
        """Count the batch's executions that have ended since the last look; how many have not."""
        unfinished = self.keys.batch(batch_id, "unfinished")
        members = [_text(m) for m in await self.redis.smembers(unfinished)]
        for execution_id, result in (await self.waiter.stored(*members)).items():
            await self._done(keys=[unfinished, self.keys.batch(batch_id)],
                             args=[execution_id, _STATUS + result.status.value])
        return int(await self.redis.scard(unfinished))

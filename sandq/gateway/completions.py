"""Each gateway's background loop: webhooks for ended executions and batches; batches' waiting requests.

Executions with a callback wait in a sorted set, batches in another, scored by when they are next
looked at. A gateway claims the due ones (``claim_due.lua`` pushes their scores to the end of a
lease, so that no other replica takes them meanwhile and a dead gateway's come back), reads their
results with one ``MGET`` per 500, queues the webhook of each that ended (once per delivery id,
however many gateways see it end) and puts the others back for the next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis

from sandq.client.client import Client
from sandq.client.waiting import ResultWaiter
from sandq.gateway.batches import Batches, BatchRecord
from sandq.gateway.records import Records
from sandq.gateway.scripts import claim_due
from sandq.gateway.settings import GatewaySettings
from sandq.gateway.ssrf import TargetRefused
from sandq.gateway.webhooks import Webhooks

log = logging.getLogger(__name__)

CLAIM_MOST = 256
"""Most executions (or batches) one look takes."""
EXECUTION_COMPLETED = "execution.completed"
BATCH_COMPLETED = "batch.completed"


def execution_delivery(execution_id: str) -> str:
    """The webhook delivery id (and idempotency key) of an execution."""
    return f"execution-{execution_id}"


def batch_delivery(batch_id: str) -> str:
    """The webhook delivery id (and idempotency key) of a batch."""
    return f"batch-{batch_id}"


class Completions:
    """Watches what ended, for one gateway; ``run`` until cancelled."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: GatewaySettings,
        records: Records,
        batches: Batches,
        waiter: ResultWaiter,
        webhooks: Webhooks,
        submitter: Client,
    ) -> None:
        self.redis, self.settings = client, settings
        self.records, self.batches, self.waiter, self.webhooks = records, batches, waiter, webhooks
        self.submitter = submitter
        self.keys = records.keys
        self._claim = claim_due(client)
        self.poked = asyncio.Event()

    async def _claimed(self, key: str) -> list[str]:
        now = time.time()
        lease = self.settings.webhook_lease_seconds
        claimed = await self._claim(keys=[key], args=[now, now + lease, CLAIM_MOST])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in claimed]

    async def executions(self) -> int:
        """Queue the webhooks of claimed executions that ended; put the others back. How many it claimed."""
        ids = await self._claimed(self.keys.watched("callbacks"))
        ended = await self.waiter.stored(*ids) if ids else {}
        later = time.time() + self.settings.poll_seconds
        for execution_id in ids:
            result = ended.get(execution_id)
            if result is None:
                await self.redis.zadd(self.keys.watched("callbacks"), {execution_id: later})
                continue
            record = await self.records.load(execution_id)
            if record is not None and record.callback_url:
                data = result.model_dump(mode="json")
                await self._webhook(record.tenant, record.callback_url, EXECUTION_COMPLETED, data,
                                    execution_delivery(execution_id))
            await self.redis.zrem(self.keys.watched("callbacks"), execution_id)
        return len(ids)

    async def open_batches(self) -> int:
        """Advance each claimed batch (submit, count, webhook); how many it claimed."""
        ids = await self._claimed(self.keys.watched("batches-open"))
        for batch_id in ids:
            record = await self.batches.load(batch_id)
            if record is None:  # expired
                await self.redis.zrem(self.keys.watched("batches-open"), batch_id)
                continue
            await self._advance(batch_id, record)
        return len(ids)

    async def _advance(self, batch_id: str, record: BatchRecord) -> None:
        retry_at = await self.batches.submit_waiting(batch_id, self.submitter)
        unfinished = await self.batches.count_ended(batch_id)
        if unfinished:
            next_look = retry_at or time.time() + self.settings.poll_seconds
            await self.redis.zadd(self.keys.watched("batches-open"), {batch_id: next_look})
            return
        if record.callback_url:
            progress = await self.batches.progress(batch_id, record)
            data = {"id": batch_id, **progress.model_dump(mode="json")}
            delivery_id = batch_delivery(batch_id)
            await self._webhook(record.tenant, record.callback_url, BATCH_COMPLETED, data, delivery_id)
        await self.redis.zrem(self.keys.watched("batches-open"), batch_id)

    async def _webhook(
        self, tenant: str, url: str, event: str, data: dict[str, object], delivery_id: str
    ) -> None:
        try:
            await self.webhooks.enqueue(tenant, url, event, data, delivery_id)
        except TargetRefused as refused:  # the allow-list changed since the URL was accepted
            log.warning("webhook %s not sent: %s", delivery_id, refused)

    async def run(self) -> None:
        """Look at what is due every ``poll_seconds`` (at once when ``poked``), until cancelled."""
        while True:
            try:
                busy = await self.executions() + await self.open_batches()
            except redis.RedisError as error:
                log.warning("completions paused: Redis answered %s", type(error).__name__)
                busy = 0
            if busy < CLAIM_MOST:
                self.poked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poked.wait(), self.settings.poll_seconds)


async def supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run ``loop`` until cancelled; if it dies, log why and start it again a second later."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s died; restarting it", name)
            await asyncio.sleep(1.0)

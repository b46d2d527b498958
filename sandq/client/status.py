"""What the queues hold right now: depth by queue and tenant, in flight by tenant, workers.

Called by ``sandq status`` and the worker's metrics (``sandq.worker.metrics``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis
from celery import Celery
from pydantic import BaseModel

from sandq.broker.keys import LANES, Keys
from sandq.broker.routing import queue_for, tenant_queues
from sandq.contract import DEFAULT_TENANT
from sandq.settings import Settings


class Connected(Protocol):
    """What a snapshot reads through: a client's settings, Redis connection and Celery app."""

    settings: Settings
    redis: redis.Redis
    app: Celery


class TenantStatus(BaseModel):
    """One tenant: its queue, the messages in it, and its admitted, parked and running executions."""

    tenant: str
    queue: str
    messages: int
    queued: int
    parked: int
    in_flight: int


class QueueStatus(BaseModel):
    """A snapshot of the whole deployment."""

    queued: int
    parked: int
    in_flight: int
    reserved_by_workers: int
    tenants: list[TenantStatus]
    workers: dict[str, int]


def snapshot(client: Connected, worker_timeout: float | None = 1.0) -> QueueStatus:
    """Read the queues, the admission, parked and in-flight sets, and ask the workers what they run.

    An admitted execution is ``queued`` until it starts: as a message in its queue, or parked
    (refused a slot by an in-flight cap, waiting in its tenant's line for a hand-off).

    ``worker_timeout=None`` asks no worker (``workers`` stays empty): Redis reads only. The
    admission, parked and in-flight counts are read in one transaction, so the tenants' rows and
    the totals agree; the queues' messages are read apart, through Celery.
    """
    keys = Keys(client.settings.queue)
    redis = client.redis
    members = redis.smembers(keys.tenants)
    tenants = sorted({t.decode() if isinstance(t, bytes) else t for t in members} | {DEFAULT_TENANT})
    rows = []
    with client.app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        depth = {  # not passive: a passive declare of an empty queue fails; this one writes nothing
            q: int(channel.queue_declare(queue=q).message_count)
            for q in tenant_queues(client.settings, tenants)
        }
        reserved = int(channel.client.hlen(channel.unacked_key))
    *per_tenant, (queued, parked, in_flight) = _counts(redis, keys, tenants, time.time())
    for tenant, (tenant_queued, tenant_parked, tenant_in_flight) in zip(tenants, per_tenant, strict=True):
        queue = queue_for(client.settings, tenant)
        rows.append(
            TenantStatus(
                tenant=tenant, queue=queue, messages=depth.get(queue, 0),
                queued=tenant_queued, parked=tenant_parked, in_flight=tenant_in_flight,
            )
        )
    active = {}
    if worker_timeout is not None:
        active = client.app.control.inspect(timeout=worker_timeout).active() or {}
    return QueueStatus(
        queued=queued,
        parked=parked,
        in_flight=in_flight,
        reserved_by_workers=reserved,
        tenants=rows,
        workers={name: len(tasks) for name, tasks in active.items()},
    )


def _counts(redis: redis.Redis, keys: Keys, tenants: list[str], now: float) -> list[tuple[int, int, int]]:
    """Queued, parked and in flight for each tenant, then for the whole deployment: one transaction."""
    pipe = redis.pipeline(transaction=True)
    for tenant in tenants:
        pipe.zcount(keys.queued_for(tenant), now, "+inf")
        for lane in LANES:
            pipe.llen(keys.parked_for(tenant, lane))
        pipe.zcount(keys.in_flight_for(tenant), now, "+inf")
    pipe.zcount(keys.queued, now, "+inf")
    pipe.scard(keys.parked)
    pipe.zcount(keys.in_flight, now, "+inf")
    values = [int(v) for v in pipe.execute()]
    per_tenant = 2 + len(LANES)
    out = []
    for at in range(len(tenants)):
        row = values[at * per_tenant:(at + 1) * per_tenant]
        out.append((row[0], sum(row[1:-1]), row[-1]))
    out.append((values[-3], values[-2], values[-1]))
    return out

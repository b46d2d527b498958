"""Admission at submit: global and per-tenant caps on queued executions, atomic in Redis."""

from __future__ import annotations

from enum import IntEnum

import redis

from sandq.broker.errors import QueueFull, TenantQuotaExceeded
from sandq.broker.keys import Keys
from sandq.broker.scripts import AdmitScript
from sandq.settings import Settings

_QUEUE_FULL, _TENANT_FULL = 1, 2


class Admitted(IntEnum):
    """How an admitted execution was counted."""

    NEW = 0
    ALREADY = 3
    NEW_TENANT = 4


class Admission:
    """Counts queued executions by id in sorted sets, so that a lost count heals by expiry."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.queue)
        self._admit = AdmitScript(client, self.keys)

    def admit(self, execution_id: str, tenant: str) -> Admitted:
        """Count ``execution_id`` as queued, unless it already was (queued or running).

        Raises ``QueueFull`` or ``TenantQuotaExceeded`` (and counts nothing) at a cap.
        """
        settings = self.settings
        verdict = self._admit(
            execution_id=execution_id, tenant=tenant, ttl_seconds=settings.queued_ttl_seconds,
            cap=settings.max_queued, tenant_cap=settings.queued_cap(tenant),
            active_seconds=settings.active_tenant_seconds,
        )
        retry_after = self.settings.retry_after_seconds
        if verdict == _QUEUE_FULL:
            raise QueueFull(f"{self.settings.max_queued} executions are queued already", retry_after)
        if verdict == _TENANT_FULL:
            raise TenantQuotaExceeded(tenant, retry_after)
        return Admitted(verdict)

    def withdraw(self, execution_id: str, tenant: str) -> None:
        """Stop counting ``execution_id`` as queued (it was cancelled, or never published)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.queued, execution_id)
        pipe.zrem(self.keys.queued_for(tenant), execution_id)
        pipe.execute()

"""Where a submission goes: one queue per tenant, and a message priority per kind of work.

Workers round-robin over the tenant queues (fairness between tenants); kombu's Redis
transport pops each priority from every queue before the next: first the executions a hand-off
sends back with their slot (0), then interactive (3), then batch (9).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from sandq.contract import DEFAULT_TENANT
from sandq.settings import Settings

Priority = Literal["interactive", "batch"]

PRIORITY_VALUES: dict[Priority, int] = {"interactive": 3, "batch": 9}
"""Celery message priority of each kind (with Redis, lower is served first)."""

HANDED_OFF_PRIORITY = 0
"""Priority of a parked execution sent back holding its slot: it goes ahead of every new one."""

TENANT_QUEUE_COMMAND = "sandq_tenant_queue"
"""Worker remote-control command announcing a new tenant (arguments ``base`` and ``tenant``):
only workers whose base queue is ``base`` start consuming the tenant's queue."""


def queue_for(settings: Settings, tenant: str) -> str:
    """The queue of ``tenant``: the base queue for the default tenant, else ``<queue>.<tenant>``."""
    return settings.queue if tenant == DEFAULT_TENANT else f"{settings.queue}.{tenant}"


def tenant_queues(settings: Settings, tenants: Iterable[str]) -> list[str]:
    """The queues of ``tenants`` and the base queue, sorted, without duplicates."""
    return sorted({settings.queue, *(queue_for(settings, t) for t in tenants)})


def priority_of(value: int | None) -> Priority:
    """The kind of work a message priority stands for (none means interactive)."""
    return "batch" if value is not None and value >= PRIORITY_VALUES["batch"] else "interactive"

"""How a worker comes to consume each tenant's queue, and only the tenants of its base queue.

Two ways, both keyed by the worker's base queue (``Settings.queue``), so that workers of other
deployments sharing the Redis database never consume this deployment's tenant queues:

* ``TenantQueues`` polls the set of tenants of the base queue every second (the safety net);
* the client broadcasts ``TENANT_QUEUE_COMMAND`` naming the base queue and the new tenant, and
  ``sandq_tenant_queue`` adds the queue at once, only on workers of that base queue.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps
from celery.worker.control import control_command

from sandq.broker.keys import Keys
from sandq.broker.routing import TENANT_QUEUE_COMMAND, queue_for, tenant_queues
from sandq.settings import get_settings

log = logging.getLogger(__name__)

DISCOVERY_SECONDS = 1.0


@control_command(
    name=TENANT_QUEUE_COMMAND, args=[("base", str), ("tenant", str)], signature="<base> <tenant>"
)
def sandq_tenant_queue(state: Any, base: str, tenant: str, **_: Any) -> dict[str, str]:
    """Consume the queue of a new ``tenant`` of ``base``, if ``base`` is this worker's base queue."""
    settings = get_settings()
    if base != settings.queue:
        return {"ok": f"ignored: this worker serves {settings.queue!r}, not {base!r}"}
    queue = queue_for(settings, tenant)
    state.consumer.call_soon(state.consumer.add_task_queue, queue)  # a no-op if consumed already
    return {"ok": f"consuming {queue}"}


class TenantQueues(bootsteps.StartStopStep):
    """Adds the queue of every tenant in Redis to the consumer, now and every second."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.settings = get_settings()
        self.redis = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        self.timer_ref: Any = None

    def start(self, consumer: Any) -> None:
        """Consume the known tenants' queues, and look for new tenants periodically."""
        self.refresh(consumer)
        self.timer_ref = consumer.timer.call_repeatedly(DISCOVERY_SECONDS, self.refresh, (consumer,))

    def stop(self, consumer: Any) -> None:
        """Stop looking for new tenants."""
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def refresh(self, consumer: Any) -> None:
        """Start consuming the queue of each tenant not consumed yet."""
        try:
            tenants = {str(t) for t in self.redis.smembers(Keys(self.settings.queue).tenants)}
        except redis.RedisError as error:
            log.warning("could not list tenants: %s", error)
            return
        for queue in tenant_queues(self.settings, tenants):
            if not consumer.task_consumer.consuming_from(queue):
                consumer.add_task_queue(queue)

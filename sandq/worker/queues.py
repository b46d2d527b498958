"""A worker consumer step that starts consuming each tenant's queue as tenants appear."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps

from sandq.broker.keys import Keys
from sandq.broker.routing import tenant_queues
from sandq.settings import get_settings

log = logging.getLogger(__name__)

DISCOVERY_SECONDS = 1.0


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

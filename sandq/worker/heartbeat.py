"""The heartbeat that lets a short visibility timeout redeliver only the executions of dead workers.

kombu's Redis transport records each delivered, unacknowledged message in the ``unacked_index``
sorted set, scored by its delivery time, and puts back on its queue every message whose score is
older than the visibility timeout (``redelivery_seconds``). A thread in each worker's main process
refreshes the score of every message that worker holds (running, waiting for a pool process, or
waiting for a retry countdown) every ``heartbeat_seconds``: a live worker's messages never come
back, a dead worker's come back about ``redelivery_seconds`` after it died.

The main process holds the messages (a pool process only runs them), so killing a pool process
does not stop the heartbeat: Celery requeues that message at once (``task_reject_on_worker_lost``).
Started and stopped by ``sandq.worker.process``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery.worker import state

from sandq.settings import Settings

log = logging.getLogger(__name__)

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's default name of the sorted set of unacknowledged delivery tags."""


def held_delivery_tags() -> list[str]:
    """Delivery tags of every message this worker process holds and has not acknowledged."""
    held: list[Any] = []
    scheduled = state.scheduled_requests  # type: ignore[attr-defined]  # newer than celery-types
    for requests in (state.reserved_requests, scheduled):
        held += _snapshot(requests)
    return sorted({str(r.message.delivery_tag) for r in held if r.message.delivery_tag})


def _snapshot(requests: Iterable[Any]) -> list[Any]:
    """A copy of a set the event loop (or pool threads) may change meanwhile."""
    while True:
        try:
            return list(requests)
        except RuntimeError:  # changed during the copy: copy again
            continue


class Heartbeat:
    """Refreshes the delivery time of this worker's unacknowledged messages until stopped."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        timeout = settings.heartbeat_seconds
        self.redis = client or redis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, name="sandq-heartbeat", daemon=True)

    def start(self) -> None:
        """Start beating in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (the messages still held come back after ``redelivery_seconds``)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.settings.heartbeat_seconds + 1)

    def beat(self, tags: list[str]) -> int:
        """Mark ``tags`` as delivered now (only those still unacknowledged); return how many were."""
        if not tags:
            return 0
        changed = self.redis.zadd(UNACKED_INDEX_KEY, dict.fromkeys(tags, time.time()), xx=True, ch=True)
        return int(changed or 0)

    def _beat_forever(self) -> None:
        while not self._stopped.wait(self.settings.heartbeat_seconds):
            try:
                self.beat(held_delivery_tags())
            except redis.RedisError as error:
                log.warning("heartbeat: could not refresh unacknowledged messages: %s", error)


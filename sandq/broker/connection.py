"""The Redis client of a worker process, which rides out a short Redis outage (a restart).

Each call that fails to connect, or times out, is tried again every ``RETRY_PAUSE_SECONDS``
for about ``redis_outage_seconds``; with AOF a restarted Redis has everything back. Used by
``sandq.worker.process``. The gate scripts are safe to repeat: a second acquire of a held
slot, or of a parked execution, changes nothing.
"""

from __future__ import annotations

import math

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

RETRY_PAUSE_SECONDS = 0.25


def outage_riding_client(url: str, outage_seconds: float) -> redis.Redis:
    """A client of ``url`` whose calls retry for about ``outage_seconds`` while Redis is unreachable."""
    retries = math.ceil(outage_seconds / RETRY_PAUSE_SECONDS)
    return redis.Redis.from_url(
        url,
        retry=Retry(ConstantBackoff(RETRY_PAUSE_SECONDS), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )

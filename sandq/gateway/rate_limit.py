"""Per-API-key rate limits with a ``Retry-After``, kept in Redis by the ``limits`` library.

The moving-window strategy counts exactly the requests of the last window (no burst of twice the
limit at a window edge), and tells when the oldest of them leaves it: the ``Retry-After``.
"""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter

from sandq.gateway.redis_keys import GatewayKeys


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class KeyRateLimiter:
    """Counts each API key's requests against the configured limits (e.g. '20/second;600/minute')."""

    def __init__(self, redis_url: str, spec: str, namespace: str) -> None:
        self.storage = RedisStorage(
            redis_url, implementation="redispy", key_prefix=GatewayKeys(namespace).rate_limit_prefix
        )
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.limits = parse_many(spec)

    async def acquire(self, key_id: str) -> float | None:
        """Count one request of ``key_id``: None if allowed, else the seconds to wait before retrying."""
        for limit in self.limits:
            if not await self.limiter.hit(limit, key_id):
                stats = await self.limiter.get_window_stats(limit, key_id)
                return max(stats.reset_time - time.time(), 0.0)
        return None

    async def aclose(self) -> None:
        """Close the limiter's Redis connections."""
        bridge = self.storage.bridge
        if isinstance(bridge, RedispyBridge):
            await bridge.storage.aclose()

"""Per-key rate limits (the ``limits`` library on this Redis): refusal with a Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from sandq.gateway.rate_limit import KeyRateLimiter, retry_after_header
from tests.conftest import RedisServer
from tests.integration.gateway.conftest import gateway_settings


@pytest.fixture
async def limiter(redis_server: RedisServer, namespace: str) -> AsyncIterator[KeyRateLimiter]:
    limiter = KeyRateLimiter(redis_server.url, "3/minute", namespace)
    yield limiter
    await limiter.aclose()


async def test_the_request_past_the_limit_is_refused_with_the_wait(limiter: KeyRateLimiter) -> None:
    allowed = [await limiter.acquire("key-a") for _ in range(3)]
    refused = await limiter.acquire("key-a")

    assert allowed == [None, None, None]
    assert refused is not None and 55 < refused <= 60
    assert retry_after_header(refused) in {"56", "57", "58", "59", "60"}
    assert await limiter.acquire("key-b") is None


async def test_a_key_may_ask_again_after_its_retry_after(redis_server: RedisServer, namespace: str) -> None:
    limiter = KeyRateLimiter(redis_server.url, "2/second", namespace)
    await limiter.acquire("k")
    await limiter.acquire("k")
    wait = await limiter.acquire("k")
    assert wait is not None

    await asyncio.sleep(wait + 0.05)

    assert await limiter.acquire("k") is None
    await limiter.aclose()


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.2, 1.0, 1.01, 59.5)] == ["1", "1", "1", "2", "60"]


def test_an_unreadable_rate_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="rate_limit"):
        gateway_settings(rate_limit="many per second")

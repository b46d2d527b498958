"""Signed completion webhooks, delivered at least once with retries and backoff.

A delivery is a JSON record in Redis (target, body, state) plus an entry in a sorted set of
due deliveries, so retries survive a gateway restart and any gateway replica may send them.
Each attempt is signed afresh (``sandq.webhook_signature``) with the same ``webhook-id``, the
receiver's idempotency key. A timeout, a connection error, 408, 429 or a 5xx is retried after an
exponential backoff with jitter, up to ``webhook_max_attempts``; another answer ends the delivery.

Every connection goes to an address checked by ``TargetPolicy`` (pinned: ``Host`` and TLS SNI
carry the host name, the certificate is verified against it). Environment proxies are ignored
(a proxy would resolve the host itself), only 307/308 redirects are followed, each target checked
again, and connections are not reused (another host name on the same address must not get a
connection verified for the first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from sandq.gateway.metrics import WEBHOOK_ATTEMPTS
from sandq.gateway.records import of_tenant, parsed
from sandq.gateway.redis_keys import GatewayKeys
from sandq.gateway.scripts import claim_due
from sandq.gateway.settings import GatewaySettings
from sandq.gateway.ssrf import Target, TargetPolicy, TargetRefused
from sandq.gateway.webhook_secrets import WebhookSecrets
from sandq.webhook_signature import signed_headers

log = logging.getLogger(__name__)

_FOLLOWED_REDIRECTS = (307, 308)
_RETRIED_STATUSES = (408, 429)
_jitter = random.Random()  # noqa: S311 (spreads retries; not a secret)


class DeliveryState(StrEnum):
    """Where a webhook delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    REFUSED = "refused"


class Delivery(BaseModel):
    """One webhook: its target, its body and how its delivery went."""

    id: str
    tenant: str
    url: str
    body: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class _Outcome(BaseModel):
    """What one attempt came to; ``state`` None means: try again."""

    state: DeliveryState | None
    status_code: int | None = None
    error: str | None = None


def _outcome_of(status_code: int) -> _Outcome:
    if 200 <= status_code < 300:
        return _Outcome(state=DeliveryState.DELIVERED, status_code=status_code)
    retried = status_code >= 500 or status_code in _RETRIED_STATUSES
    state = None if retried else DeliveryState.FAILED
    return _Outcome(state=state, status_code=status_code, error=f"the receiver answered {status_code}")


class Webhooks:
    """Queues, sends and records the webhooks of one deployment."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        settings: GatewaySettings,
        namespace: str,
        *,
        policy: TargetPolicy | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.keys = GatewayKeys(namespace)
        self.secrets = WebhookSecrets(redis_client, settings, namespace)
        self.policy = policy or TargetPolicy(settings.webhook_allow_hosts)
        self.http = httpx.AsyncClient(
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(
                settings.webhook_read_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": "sandq-webhooks"},
        )
        self._claim = claim_due(redis_client)

    async def enqueue(
        self, tenant: str, url: str, event_type: str, data: Mapping[str, Any], delivery_id: str
    ) -> Delivery:
        """Queue a webhook (once per ``delivery_id``); ``TargetRefused`` at once for a refused URL."""
        self.policy.check_url(url)
        now = datetime.now(UTC)
        body = json.dumps({"type": event_type, "timestamp": now.isoformat(), "data": data})
        delivery = Delivery(
            id=delivery_id, tenant=tenant, url=url, body=body, created_at=now, next_attempt_at=now
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(
            self.keys.delivery(delivery_id),
            delivery.model_dump_json(),
            nx=True,
            ex=self.settings.webhook_delivery_ttl_seconds,
        )
        pipe.zadd(self.keys.deliveries_due, {delivery_id: now.timestamp()}, nx=True)
        created, _ = await pipe.execute()
        return delivery if created else (await self._load(delivery_id) or delivery)

    async def _load(self, delivery_id: str) -> Delivery | None:
        return parsed(await self.redis.get(self.keys.delivery(delivery_id)), Delivery)

    async def get(self, tenant: str, delivery_id: str) -> Delivery | None:
        """``tenant``'s delivery ``delivery_id``, or None (also for another tenant's)."""
        return of_tenant(await self._load(delivery_id), tenant)

    async def deliver_due(self, most: int = 16) -> int:
        """Attempt (concurrently) up to ``most`` deliveries that are due; return how many."""
        now = time.time()
        claimed = await self._claim(
            keys=[self.keys.deliveries_due], args=[now, now + self.settings.webhook_lease_seconds, most]
        )
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in claimed]
        errors = await asyncio.gather(*(self._attempt(i) for i in ids), return_exceptions=True)
        for delivery_id, error in zip(ids, errors, strict=True):
            if error is not None:  # the delivery comes back when its lease ends
                log.warning("webhook %s: attempt not recorded: %s", delivery_id, type(error).__name__)
        return len(ids)

    async def run(self) -> None:
        """Deliver due webhooks until cancelled (each gateway runs this in the background)."""
        while True:
            try:
                attempted = await self.deliver_due()
            except redis.RedisError as error:
                log.warning("webhook delivery paused: Redis answered %s", type(error).__name__)
                attempted = 0
            if not attempted:
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    def _backoff(self, attempts: int) -> float:
        ceiling = self.settings.webhook_backoff_seconds * 2.0 ** (attempts - 1)
        return min(ceiling, self.settings.webhook_backoff_max_seconds) * _jitter.uniform(0.5, 1.0)

    async def _attempt(self, delivery_id: str) -> None:
        delivery = await self._load(delivery_id)
        if delivery is None or delivery.state is not DeliveryState.PENDING:
            await self.redis.zrem(self.keys.deliveries_due, delivery_id)
            return
        headers = signed_headers(await self.secrets.signing(delivery.tenant), delivery.id, delivery.body)
        self._record(delivery, await self._send(delivery.url, delivery.body, headers))
        WEBHOOK_ATTEMPTS.labels(delivery.state.value).inc()
        kept = await self.redis.set(
            self.keys.delivery(delivery_id), delivery.model_dump_json(), xx=True, keepttl=True
        )
        due = self.keys.deliveries_due
        if kept and delivery.next_attempt_at is not None:
            await self.redis.zadd(due, {delivery_id: delivery.next_attempt_at.timestamp()})
        else:
            await self.redis.zrem(due, delivery_id)

    def _record(self, delivery: Delivery, outcome: _Outcome) -> None:
        """Update ``delivery`` after an attempt: delivered, given up, or due again after a backoff."""
        now = datetime.now(UTC)
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
        delivery.state = outcome.state or DeliveryState.PENDING
        if outcome.state is None and delivery.attempts >= self.settings.webhook_max_attempts:
            delivery.state = DeliveryState.FAILED
        delivery.next_attempt_at = None
        if delivery.state is DeliveryState.PENDING:
            delivery.next_attempt_at = now + timedelta(seconds=self._backoff(delivery.attempts))
        elif delivery.state is DeliveryState.DELIVERED:
            delivery.delivered_at = now

    async def _send(self, url: str, body: str, headers: Mapping[str, str]) -> _Outcome:
        """One attempt: POST to ``url``, following 307/308 redirects (each target checked again)."""
        settings = self.settings
        target_url: str | httpx.URL = url
        try:
            for _ in range(settings.webhook_max_redirects + 1):
                async with asyncio.timeout(settings.webhook_hop_seconds):
                    target = await self.policy.resolve(target_url)
                    response = await self._post_pinned(target, body, headers)
                location = response.headers.get("location")
                if response.status_code not in _FOLLOWED_REDIRECTS or not location:
                    return _outcome_of(response.status_code)
                target_url = target.url.join(location)
        except TargetRefused as refused:
            return _Outcome(state=DeliveryState.REFUSED, error=str(refused))
        except httpx.InvalidURL as invalid:
            return _Outcome(state=DeliveryState.FAILED, error=f"invalid redirect: {invalid}")
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(state=None, error="timed out")
        except httpx.HTTPError as error:
            return _Outcome(state=None, error=f"{type(error).__name__}: {error}")
        too_many = f"more than {settings.webhook_max_redirects} redirects"
        return _Outcome(state=DeliveryState.FAILED, error=too_many)

    async def _post_pinned(self, target: Target, body: str, headers: Mapping[str, str]) -> httpx.Response:
        """POST to the first of the target's checked addresses that accepts a connection."""
        failure: httpx.ConnectError | None = None
        for address in target.addresses:
            request = self.http.build_request(
                "POST",
                target.pinned_url(address),
                content=body.encode(),
                headers={**headers, "host": target.host_header, "content-type": "application/json"},
                extensions={"sni_hostname": target.host},
            )
            try:
                response = await self.http.send(request, stream=True)
            except httpx.ConnectError as error:
                failure = error
                continue
            await response.aclose()
            return response
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

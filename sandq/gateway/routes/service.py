"""The service's own routes: health, and each tenant's webhook secret."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sandq.gateway.auth import Caller, State
from sandq.gateway.models import WebhookSecret

router = APIRouter()


@router.get("/healthz", tags=["service"], responses={503: {"description": "Redis does not answer"}})
async def healthz(state: State) -> Any:
    """200 while Redis answers (readiness); any answer at all says the process lives."""
    try:
        await state.redis.ping()
    except redis.RedisError as error:
        return JSONResponse({"status": "unavailable", "error": type(error).__name__}, status_code=503)
    return {"status": "ok"}


@router.get("/metrics", tags=["service"], response_class=Response)
def metrics() -> Response:
    """Prometheus metrics: requests by route and status, latency, event streams open, webhook attempts."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/webhooks/secret", tags=["webhooks"], response_model=WebhookSecret)
async def webhook_secret(key: Caller, state: State) -> WebhookSecret:
    """The secret your webhooks are signed with (verify them with it: Standard Webhooks)."""
    return WebhookSecret(secret=await state.secrets.current(key.tenant))


@router.post("/v1/webhooks/secret/rotate", tags=["webhooks"], response_model=WebhookSecret)
async def rotate_webhook_secret(key: Caller, state: State) -> WebhookSecret:
    """A new secret; webhooks are signed with the old one too for the grace period."""
    return WebhookSecret(secret=await state.secrets.rotate(key.tenant))

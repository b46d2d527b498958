"""Pieces of answers shared by the routes."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import HTTPException

from sandq.gateway.models import WebhookView
from sandq.gateway.state import Gateway

T = TypeVar("T")


def refusals(what: str) -> dict[int | str, dict[str, Any]]:
    """The answers every route about one ``what`` may give besides its own (OpenAPI ``responses``)."""
    return {
        401: {"description": "No valid API key"},
        404: {"description": f"No such {what} (or another tenant's)"},
        429: {"description": "The key's rate limit; see Retry-After"},
    }


def found(record: T | None, what: str) -> T:
    """``record``, or 404 (for an unknown id and another tenant's alike)."""
    if record is None:
        raise HTTPException(404, f"no such {what}")
    return record


async def webhook_view(state: Gateway, tenant: str, delivery_id: str, url: str | None) -> WebhookView | None:
    """How the webhook ``delivery_id`` stands: ``waiting`` while it is not queued yet; None without a URL."""
    if url is None:
        return None
    delivery = await state.webhooks.get(tenant, delivery_id)
    if delivery is None:
        return WebhookView(id=delivery_id, url=url, state="waiting")
    return WebhookView.model_validate(delivery.model_dump(exclude={"body", "tenant", "created_at"}))

"""The gateway's ASGI application (``sandq serve``): FastAPI, its routes, errors, metrics and loops.

``create_app`` is the factory uvicorn calls. At start-up the app connects (``Gateway.open``) and
starts its background loops: webhook delivery, and the watch on ended executions and batches
(``sandq.gateway.completions``), each restarted if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandq.broker.errors import QueueFull, SubmissionRefused
from sandq.gateway.completions import supervised
from sandq.gateway.metrics import RequestMetrics
from sandq.gateway.rate_limit import retry_after_header
from sandq.gateway.routes import batches, executions, service
from sandq.gateway.settings import GatewaySettings
from sandq.gateway.ssrf import TargetPolicy, TargetRefused
from sandq.gateway.state import Gateway
from sandq.settings import Settings
from sandq.stopping import stop
from sandq.validation import RequestRejected

log = logging.getLogger(__name__)

BODY_BYTES = 64 * 1024 * 1024
"""Largest request body (a batch's); an execution's is smaller (``routes.executions.BODY_BYTES``)."""


def _unprocessable(field: list[str], message: str, kind: str) -> JSONResponse:
    detail = [{"type": kind, "loc": ["body", *field], "msg": message}]
    return JSONResponse({"detail": detail}, status_code=422)


async def _rejected(request: Request, error: Exception) -> JSONResponse:
    """A request beyond this deployment's maximums: 422, naming the field as validation does."""
    field, _, message = str(error).partition(": ")
    return _unprocessable(field.split("."), message, "limit_exceeded")


async def _refused_target(request: Request, error: Exception) -> JSONResponse:
    return _unprocessable(["callback_url"], str(error), "url_refused")


async def _refused(request: Request, error: Exception) -> JSONResponse:
    """The queue refused the submission: 503 when it is full, 429 at the tenant's cap; with Retry-After."""
    assert isinstance(error, SubmissionRefused)
    status = 503 if isinstance(error, QueueFull) else 429
    headers = {"Retry-After": retry_after_header(error.retry_after)}
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


def create_app(
    settings: Settings | None = None,
    config: GatewaySettings | None = None,
    policy: TargetPolicy | None = None,
) -> FastAPI:
    """The gateway app; settings default to the ``SANDQ_`` and ``SANDQ_GATEWAY_`` environment."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = Gateway.open(settings or Settings(), config or GatewaySettings(), policy)
        app.state.gateway = state
        loops = [
            asyncio.create_task(supervised("webhook delivery", state.webhooks.run)),
            asyncio.create_task(supervised("completions", state.completions.run)),
        ]
        try:
            yield
        finally:
            if await stop(loops):
                log.warning("a background loop did not stop when cancelled")
            await state.aclose()

    app = FastAPI(
        title="sandq gateway",
        summary="Run untrusted Python in gVisor sandboxes: a multi-tenant HTTP API in front of sandq.",
        version="1",
        lifespan=lifespan,
        max_body_size=BODY_BYTES,
    )
    app.include_router(executions.router)
    app.include_router(batches.router)
    app.include_router(service.router)
    handlers: dict[type[Exception], Any] = {
        RequestRejected: _rejected, TargetRefused: _refused_target, SubmissionRefused: _refused
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
    app.add_middleware(RequestMetrics)
    return app

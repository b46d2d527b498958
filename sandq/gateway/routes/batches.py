"""``/v1/batches``: submit many requests at once, follow their progress, read their results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.exceptions import RequestValidationError

from sandq.contract import ExecutionResult
from sandq.gateway.auth import Caller, State
from sandq.gateway.batches import BatchRecord
from sandq.gateway.completions import batch_delivery
from sandq.gateway.models import BatchBody, BatchCreated, BatchProgressView
from sandq.gateway.routes.views import found, refusals, webhook_view
from sandq.validation import RequestRejected, validate_request

router = APIRouter(prefix="/v1/batches", tags=["batches"])


async def owned(batch_id: str, key: Caller, state: State) -> BatchRecord:
    """The caller's batch ``batch_id``; 404 for an unknown id and for another tenant's alike."""
    return found(await state.batches.of(key.tenant, batch_id), "batch")


Owned = Annotated[BatchRecord, Depends(owned)]


_INVALID = {"description": "An invalid request (requests.N.field), or a callback URL refused"}


@router.post("", status_code=202, responses={**refusals("batch"), 422: _INVALID})
async def create(body: BatchBody, key: Caller, state: State) -> BatchCreated:
    """Queue every request of the batch; those beyond the queue's caps wait in the batch for room."""
    most = state.config.batch_max_requests
    if len(body.requests) > most:
        raise RequestValidationError([{"type": "too_long", "loc": ("body", "requests"),
                                       "msg": f"a batch has at most {most} requests"}])
    requests = []
    for index, fields in enumerate(body.requests):
        try:
            requests.append(validate_request(fields.for_tenant(key.tenant), state.settings))
        except RequestRejected as rejected:
            raise RequestRejected(f"requests.{index}.{rejected}") from None
    if body.callback_url is not None:
        state.webhooks.policy.check_url(body.callback_url)
    record = BatchRecord(tenant=key.tenant, total=len(requests), callback_url=body.callback_url)
    batch_id, ids = await state.batches.create(record, requests)
    state.completions.poked.set()
    return BatchCreated(id=batch_id, total=len(ids), execution_ids=ids)


@router.get("/{batch_id}", responses=refusals("batch"))
async def progress(batch_id: str, record: Owned, state: State) -> BatchProgressView:
    """How far the batch has come: ended executions by status, and requests waiting for room."""
    now = await state.batches.progress(batch_id, record)
    webhook = await webhook_view(state, record.tenant, batch_delivery(batch_id), record.callback_url)
    return BatchProgressView(id=batch_id, **now.model_dump(), webhook=webhook)


@router.get("/{batch_id}/results", responses=refusals("batch"))
async def results(batch_id: str, record: Owned, state: State) -> AsyncIterator[ExecutionResult]:
    """The results of the executions that have ended, as JSON lines, in the order of the requests."""
    async for result in state.batches.results(batch_id):
        yield result

"""``/v1/executions``: submit (and perhaps wait), read, cancel, and follow one execution."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from sandq.broker.keys import Keys
from sandq.client.waiting import ResultTimeout
from sandq.gateway.auth import Caller, State
from sandq.gateway.completions import execution_delivery
from sandq.gateway.events import ENTRY_ID, execution_events
from sandq.gateway.models import ExecutionBody, Finished, Submitted, Unfinished
from sandq.gateway.records import ExecutionRecord
from sandq.gateway.routes.views import found, refusals, webhook_view
from sandq.validation import validate_request

MAX_WAIT_SECONDS = 60.0
BODY_BYTES = 4 * 1024 * 1024
"""Largest request body: code (512 KiB) and input files (768 KiB as base64) with room for JSON escapes."""

router = APIRouter(prefix="/v1/executions", tags=["executions"])


async def owned(execution_id: str, key: Caller, state: State) -> ExecutionRecord:
    """The caller's record of ``execution_id``; 404 for an unknown id and for another tenant's alike."""
    return found(await state.records.of(key.tenant, execution_id), "execution")


Owned = Annotated[ExecutionRecord, Depends(owned)]


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    max_body_size=BODY_BYTES,
    responses={
        **refusals("execution"),
        200: {"model": Finished, "description": "Ended within ?wait"},
        422: {"description": "Invalid request (the field is named), or a callback URL refused"},
        429: {"description": "The key's rate limit, or the tenant's cap on queued executions (Retry-After)"},
        503: {"description": "The queue is full; see Retry-After"},
    },
)
async def submit(
    body: ExecutionBody,
    key: Caller,
    state: State,
    wait: Annotated[
        float | None, Query(gt=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for the result")
    ] = None,
) -> Any:
    """Queue an execution: 202 with its id, or 200 with its result if it ends within ``wait`` seconds."""
    request = validate_request(body.for_tenant(key.tenant), state.settings)
    if body.callback_url is not None:
        state.webhooks.policy.check_url(body.callback_url)
    execution_id = uuid.uuid4().hex
    record = ExecutionRecord(
        tenant=key.tenant, stream_output=request.stream_output, callback_url=body.callback_url
    )
    await state.records.create(execution_id, record)
    try:
        await run_in_threadpool(state.client.submit, request, execution_id=execution_id)
    except Exception:  # refused (or Redis lost): nothing was queued
        await state.records.forget(execution_id)
        raise
    if wait is not None:
        try:
            result = await state.waiter.wait(execution_id, wait)
        except ResultTimeout:
            pass
        else:
            return JSONResponse(Finished(**result.model_dump(), webhook=None).model_dump(mode="json"))
    return Submitted(id=execution_id)


@router.get(
    "/{execution_id}",
    response_model=Finished,
    responses={202: {"model": Unfinished, "description": "Queued or running"}, **refusals("execution")},
)
async def read(execution_id: str, record: Owned, state: State) -> Any:
    """200 with the result once the execution has ended (and its webhook's state); 202 before."""
    result = (await state.waiter.stored(execution_id)).get(execution_id)
    if result is None:
        running = await state.redis.zscore(Keys(state.settings.queue).in_flight, execution_id) is not None
        unfinished = Unfinished(id=execution_id, status="running" if running else "queued")
        return JSONResponse(unfinished.model_dump(), status_code=202)
    webhook = await webhook_view(state, record.tenant, execution_delivery(execution_id), record.callback_url)
    return Finished(**result.model_dump(), webhook=webhook)


@router.delete("/{execution_id}", status_code=202, response_model=Submitted, responses=refusals("execution"))
async def cancel(execution_id: str, record: Owned, state: State) -> Submitted:
    """Cancel: a queued execution never starts, a running one is killed; it ends ``cancelled``
    (unless it had ended already)."""
    await run_in_threadpool(state.client.cancel, execution_id)
    return Submitted(id=execution_id)


def resume_point(
    last_event_id: Annotated[str | None, Header(description="Resume after this event id")] = None,
    after: Annotated[str | None, Query(description="Resume after this event id (without headers)")] = None,
) -> str:
    """Where a reader resumes: after ``Last-Event-ID`` (or ``?after=``), else from the start."""
    resume = last_event_id or after or "0-0"
    if not ENTRY_ID.fullmatch(resume):
        raise HTTPException(422, "Last-Event-ID must be an event id this stream sent")
    return resume


@router.get("/{execution_id}/events", response_class=EventSourceResponse, responses=refusals("execution"))
async def events(
    execution_id: str, record: Owned, state: State, resume: Annotated[str, Depends(resume_point)]
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``stdout`` and ``stderr`` chunks as they are written, then one ``result``."""
    async for event in execution_events(state, execution_id, record, resume):
        yield event

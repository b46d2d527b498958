"""What the gateway's API takes and answers, beyond the contract's own models.

A request body is an ``ExecutionRequest`` whose ``tenant`` is refused (the API key sets it); an
execution's body may add a ``callback_url``, a batch's carries the requests and one callback.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from sandq.contract import ExecutionRequest, ExecutionResult, Status


class RequestFields(ExecutionRequest):
    """An execution request as a tenant sends it: every field of ``ExecutionRequest`` but ``tenant``."""

    tenant: SkipJsonSchema[str | None] = Field(default=None, exclude=True)  # type: ignore[assignment]

    @field_validator("tenant", mode="before")
    @classmethod
    def _tenant_comes_from_the_key(cls, value: object) -> None:
        raise ValueError("set by your API key: leave it out")

    def for_tenant(self, tenant: str) -> dict[str, Any]:
        """The request as the queue takes it, for ``tenant``."""
        fields = self.model_dump(exclude={"tenant", "callback_url"})
        return {**fields, "tenant": tenant}


class ExecutionBody(RequestFields):
    """``POST /v1/executions``: a request, and where to send its result when it ends."""

    callback_url: str | None = Field(
        default=None, description="An https URL the result is POSTed to, signed (see the webhook secret)."
    )


class BatchBody(BaseModel):
    """``POST /v1/batches``: many requests, and where to send the summary once all have ended."""

    model_config = ConfigDict(extra="forbid")

    requests: list[RequestFields] = Field(min_length=1)
    callback_url: str | None = None


class Submitted(BaseModel):
    """An execution accepted: its id (its result is read at ``/v1/executions/{id}``)."""

    id: str


class Unfinished(Submitted):
    """An execution not yet ended."""

    status: str = Field(description="queued or running")


class WebhookView(BaseModel):
    """How the webhook of an execution or a batch stands (its body left out)."""

    id: str
    url: str
    state: str = Field(description="waiting (for the end), pending, delivered, failed or refused")
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class Finished(ExecutionResult):
    """An execution that ended: its result, and its webhook if it has a callback."""

    webhook: WebhookView | None = None


class BatchCreated(BaseModel):
    """A batch accepted: its id, and the id of each execution in the order of the requests."""

    id: str
    total: int
    execution_ids: list[str]


class BatchProgressView(BaseModel):
    """Where a batch stands: ``done`` of ``total`` ended (counted by status), ``unsubmitted`` still waiting
    for room in the queue."""

    id: str
    total: int
    done: int
    unsubmitted: int
    by_status: dict[Status, int]
    webhook: WebhookView | None = None


class WebhookSecret(BaseModel):
    """The secret that signs this tenant's webhooks (``whsec_...``)."""

    secret: str

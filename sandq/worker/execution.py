"""One execution from message to result: validate, run, classify. No Celery here."""

from __future__ import annotations

import logging
from datetime import datetime

from sandq.contract import ExecutionResult, Status, Submission
from sandq.settings import Settings
from sandq.validation import RequestRejected, validate_request
from sandq.worker.backend import Backend, InfrastructureFault, now

log = logging.getLogger(__name__)


def rejected(execution_id: str, reason: str, enqueued_at: datetime | None = None) -> ExecutionResult:
    """The result of a request refused before any sandbox started."""
    return ExecutionResult(
        id=execution_id,
        status=Status.REJECTED,
        error=reason,
        attempts=0,
        enqueued_at=enqueued_at,
        finished_at=now(),
    )


def execute(submission: Submission, backend: Backend, settings: Settings, attempt: int) -> ExecutionResult:
    """Run one submission on ``backend``.

    User-code outcomes and rejections come back as results; an
    ``InfrastructureFault`` propagates so the caller can retry it.
    """
    try:
        request = validate_request(submission.request, settings)
    except RequestRejected as error:
        return rejected(submission.id, str(error), submission.enqueued_at)
    report = backend.run(submission.id, request)
    return ExecutionResult(
        id=submission.id,
        attempts=attempt,
        backend=backend.name,
        tenant=request.tenant,
        enqueued_at=submission.enqueued_at,
        **report.model_dump(),
    )


def infrastructure_error(
    submission: Submission, backend: Backend, attempt: int, error: BaseException
) -> ExecutionResult:
    """The result of an execution the sandbox system could not carry out."""
    reason = str(error) if isinstance(error, InfrastructureFault) else f"internal error: {error!r}"
    tenant = submission.request.get("tenant")
    return ExecutionResult(
        id=submission.id,
        status=Status.INFRASTRUCTURE_ERROR,
        attempts=attempt,
        backend=backend.name,
        tenant=tenant if isinstance(tenant, str) else "default",
        enqueued_at=submission.enqueued_at,
        finished_at=now(),
        error=f"the sandbox system failed, not your code ({reason}); retrying later may help",
    )

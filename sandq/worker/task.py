"""The Celery tasks workers run: one execution, or a batch's executions together.

Both pass the same gates (``_through_gates``): a cancelled execution never starts, then it
takes an in-flight slot. The gates ride out a Redis restart (``sandq.broker.connection``); a
longer outage sends the message back to its queue. A single execution that a
cap refuses is parked in its tenant's line and its message ends storing nothing: a hand-off
sends it again, marked with a token, once it holds a slot. A batch's refused executions go back
as a message of their own. An infrastructure fault is retried (``max_retries``); the user's code
never is. Each task stores its results itself, under each execution's id, then ends the
execution's live output if it asked for one (``sandq.broker.output``). Per-process state lives
in ``sandq.worker.process``.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject
from pydantic import ValidationError

from sandq.broker.app import EXECUTE_INDEXED_TASK, EXECUTE_TASK, celery_app
from sandq.broker.keys import Keys
from sandq.broker.output import OutputPublisher, end_output
from sandq.broker.routing import Priority, priority_of
from sandq.broker.slots import Parked, Verdict
from sandq.contract import ExecutionRequest, ExecutionResult, SandboxReport, Submission
from sandq.sandbox.backend import InfrastructureFault
from sandq.settings import get_settings
from sandq.validation import RequestRejected, validate_request
from sandq.worker import metrics
from sandq.worker.process import Process, current

log = logging.getLogger(__name__)


@celery_app.task(  # the task stores its own result, and counts its own retries
    name=EXECUTE_TASK, bind=True, max_retries=None, ignore_result=True, store_errors_even_if_ignored=True
)
def execute_task(
    self: Task[Any, Any], payload: dict[str, Any], token: str = "", priority: Priority | None = None
) -> dict[str, str] | None:
    """Run one submission and store its ``ExecutionResult``; return its status (None: parked or a
    duplicate).

    ``token`` marks a message sent by a hand-off (it holds its slot); ``priority`` is then
    the one the execution was submitted with. Only the status is returned, for Celery's log
    line: formatting a whole result there cost about 2 ms a task.
    """
    try:
        submission = Submission.model_validate(payload)
    except ValidationError as error:
        return _store(ExecutionResult.rejected(str(self.request.id), f"malformed submission: {error}"))
    process = current()
    info = self.request.delivery_info or {}
    retries = int(self.request.retries)
    queue = info.get("routing_key") or process.settings.queue
    park = Parked(submission.tenant, payload, queue, priority or priority_of(info.get("priority")), retries)
    with ExitStack() as held:  # the slot is released before the result is stored
        passage = _through_gates(process, submission, held, token, park)
        if passage is Verdict.ACQUIRED:
            passage = _run(self, process, submission, retries, park.priority)
    if isinstance(passage, ExecutionResult):
        return _finish(process, submission, passage)
    return None  # parked (it comes back when handed a slot), or a duplicate


@celery_app.task(name=EXECUTE_INDEXED_TASK, bind=True, max_retries=None)
def execute_indexed_task(self: Task[Any, Any], payloads: list[dict[str, Any]]) -> dict[str, int]:
    """Run a batch's submissions together on a backend that ``runs_batches``; store one result per id.

    On other backends each submission goes on as a message of its own (so they run in
    parallel and hold their slots only while they run). Cancelled submissions never start;
    those an in-flight cap refuses go back as a batch message of their own.
    """
    info = self.request.delivery_info or {}
    settings = get_settings()
    queue, priority = info.get("routing_key") or settings.queue, info.get("priority")
    process = current()
    if not process.backend.runs_batches:
        for payload in payloads:
            celery_app.send_task(EXECUTE_TASK, args=[payload], task_id=payload.get("id"), queue=queue,
                                 priority=priority)
        return {"forwarded": len(payloads)}
    submissions = [Submission.model_validate(payload) for payload in payloads]
    with ExitStack() as held:
        runnable: dict[str, Submission] = {}
        refused: list[dict[str, Any]] = []
        for submission in submissions:
            passage = _through_gates(process, submission, held)
            if isinstance(passage, ExecutionResult):
                _finish(process, submission, passage)
            elif passage is Verdict.ACQUIRED:
                runnable[submission.id] = submission
            else:
                refused.append(submission.model_dump(mode="json"))
        if refused and not runnable:
            raise self.retry(countdown=settings.cap_retry_seconds)
        if refused:
            celery_app.send_task(EXECUTE_INDEXED_TASK, args=[refused], countdown=settings.cap_retry_seconds,
                                 queue=queue, priority=priority)
        items: list[tuple[str, ExecutionRequest]] = []
        for submission in runnable.values():
            try:
                items.append((submission.id, validate_request(submission.request, settings)))
            except RequestRejected as error:
                at = submission.enqueued_at
                rejected = ExecutionResult.rejected(submission.id, str(error), enqueued_at=at)
                _finish(process, submission, rejected)

        def on_result(execution_id: str, report: SandboxReport) -> None:
            submission = runnable[execution_id]
            _finish(process, submission, _result(submission, process, 1, report))

        process.started_backend().run_batch(items, on_result)
    return {"executions": len(items), "requeued": len(refused)}


def _through_gates(
    process: Process, submission: Submission, held: ExitStack, token: str = "", park: Parked | None = None
) -> ExecutionResult | Verdict:
    """The ``cancelled`` result of a cancelled submission, else the verdict on its in-flight slot.

    While ``held`` stays open, a cancellation reaches the running execution, and an acquired
    slot's lease is renewed (then released). ``park``: where to park it if a cap refuses it.
    If Redis stays unreachable longer than the process's client rides out, the message goes back
    to its queue unacknowledged (``Reject``): nothing is lost, nothing is failed.
    """
    tenant = submission.tenant
    held.enter_context(process.cancels.running(submission.id))  # before the check: none slips by
    try:
        if process.cancels.is_cancelled(submission.id):
            process.admission.withdraw(submission.id, tenant)
            process.in_flight.release(submission.id, tenant)  # a slot handed to it goes to the next
            why, at = "cancelled before it started", submission.enqueued_at
            return ExecutionResult.cancelled(submission.id, why, tenant=tenant, enqueued_at=at)
        verdict = process.in_flight.acquire(submission.id, tenant, token, park)
    except redis.ConnectionError as error:
        log.warning("Redis unreachable at the gates of %s, requeued: %s", submission.id, error)
        raise Reject(error, requeue=True) from error
    if verdict is Verdict.PARKED:
        process.handoff.poke()  # a slot freed before it parked goes to the first in line
    if verdict is Verdict.ACQUIRED:
        held.enter_context(process.in_flight.held(submission.id, tenant))
    return verdict


def _run(
    task: Task[Any, Any], process: Process, submission: Submission, retries: int, priority: Priority
) -> ExecutionResult:
    """Validate and run one submission that holds its slot; retry an infrastructure fault."""
    settings = process.settings
    try:
        request = validate_request(submission.request, settings)
    except RequestRejected as error:
        return ExecutionResult.rejected(submission.id, str(error), enqueued_at=submission.enqueued_at)
    attempt = retries + 1
    backend = process.started_backend()
    publisher = _publisher(process, submission.id, request) if backend.streams_output else None
    try:
        report = backend.run(submission.id, request, publisher, priority=priority)
    except InfrastructureFault as fault:
        if retries < settings.max_retries:
            log.warning("infrastructure fault on %s, retrying: %s", submission.id, fault)
            raise task.retry(exc=fault, countdown=_retry_delay(retries)) from fault
        return _failed(submission, process, attempt, str(fault))
    except Exception as error:  # a bug must not take the worker down or lose the result
        log.exception("execution %s failed inside the worker", submission.id)
        return _failed(submission, process, attempt, f"internal error: {error!r}")
    finally:
        if publisher is not None:
            publisher.close()
    return _result(submission, process, attempt, report)


def _publisher(process: Process, execution_id: str, request: ExecutionRequest) -> OutputPublisher | None:
    """A publisher of the execution's live output, if its request asked for one."""
    if not request.stream_output:
        return None
    key = Keys(process.settings.queue).output(execution_id)
    ttl = process.settings.result_ttl_seconds
    return OutputPublisher(process.redis, key, cap=request.max_output_bytes, ttl_seconds=ttl)


def _result(submission: Submission, process: Process, attempt: int, report: SandboxReport) -> ExecutionResult:
    return ExecutionResult(
        id=submission.id, attempts=attempt, backend=process.backend.name, tenant=submission.tenant,
        enqueued_at=submission.enqueued_at, **report.model_dump(),
    )


def _failed(submission: Submission, process: Process, attempt: int, reason: str) -> ExecutionResult:
    return ExecutionResult.infrastructure_error(
        submission.id, reason, attempts=attempt, backend=process.backend.name, tenant=submission.tenant,
        enqueued_at=submission.enqueued_at,
    )


def _retry_delay(retries: int) -> float:
    return float(min(2 ** (retries + 1), 30))


def _finish(process: Process, submission: Submission, result: ExecutionResult) -> dict[str, str]:
    """Store ``result``; then write the end of its live output if the request asked for one."""
    stored = _store(result)
    if submission.request.get("stream_output") is True:
        key, ttl = Keys(process.settings.queue).output(result.id), process.settings.result_ttl_seconds
        end_output(process.redis, key, result.status, ttl)
    return stored


def _store(result: ExecutionResult) -> dict[str, str]:
    """Store ``result`` under its execution id, as if its own task had returned it; count it; return
    its status."""
    document = result.model_dump(mode="json")
    celery_app.backend.store_result(result.id, document, "SUCCESS")
    metrics.record_result(document)
    return {"status": result.status.value}

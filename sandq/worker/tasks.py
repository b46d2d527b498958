"""The Celery task that workers run, and the worker-process lifecycle around it."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import redis
from celery import Task
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready
from pydantic import ValidationError

from sandq.broker.admission import Admission
from sandq.broker.app import EXECUTE_INDEXED_TASK, EXECUTE_TASK, celery_app
from sandq.broker.routing import DEFAULT_TENANT, HANDED_OFF_PRIORITY, Priority, priority_of
from sandq.contract import ExecutionRequest, ExecutionResult, SandboxReport, Submission
from sandq.settings import Settings, get_settings
from sandq.validation import RequestRejected, validate_request
from sandq.worker.backend import Backend, InfrastructureFault
from sandq.worker.backends import make_backend
from sandq.worker.cancellation import CancelListener, cancelled_before_start
from sandq.worker.execution import execute, infrastructure_error, rejected
from sandq.worker.handoff import HandedOff, HandOff
from sandq.worker.inflight import InFlight, Parked, Verdict
from sandq.worker.queues import TenantQueues

log = logging.getLogger(__name__)

_backend: Backend | None = None
_backend_lock = threading.Lock()

celery_app.steps["consumer"].add(TenantQueues)


@dataclass(frozen=True)
class _Gates:
    """What an execution passes before it runs: cancellation, then an in-flight slot."""

    admission: Admission
    in_flight: InFlight
    handoff: HandOff
    cancels: CancelListener


_gates: _Gates | None = None
_handoff: HandOff | None = None
_handoff_lock = threading.Lock()


def current_handoff() -> HandOff:
    """This process's hand-off, made on first use (after the pool has forked)."""
    global _handoff  # noqa: PLW0603 (one hand-off per worker process)
    with _handoff_lock:
        if _handoff is None:
            settings = get_settings()
            _handoff = HandOff(settings, redis.Redis.from_url(settings.redis_url), _send_handed)
        return _handoff


@worker_ready.connect
def _hand_off_periodically(**_: object) -> None:
    """The worker's main process hands free slots to parked executions every ``handoff_seconds``
    (slots of expired leases, parked executions no release reached); pool processes hand them
    off at each release."""
    current_handoff().start()


def current_gates() -> _Gates:
    """This process's gates, made on first use (after the pool has forked)."""
    global _gates  # noqa: PLW0603 (one set of gates per worker process)
    backend = current_backend()
    handoff = current_handoff()
    with _backend_lock:
        if _gates is None:
            settings = get_settings()
            client = redis.Redis.from_url(settings.redis_url)
            cancels = CancelListener(settings, client, backend, on_cancel=handoff.poke)
            in_flight = InFlight(settings, client, on_release=handoff.poke)
            _gates = _Gates(Admission(settings, client), in_flight, handoff, cancels)
        return _gates


def _send_handed(handed: HandedOff) -> None:
    """Send a parked execution back to its queue, ahead of the line (it holds its slot already)."""
    celery_app.send_task(
        EXECUTE_TASK,
        args=[handed.entry.payload],
        kwargs={"token": handed.token, "priority": handed.entry.priority},
        task_id=handed.id,
        queue=handed.entry.queue,
        priority=HANDED_OFF_PRIORITY,
        retries=handed.entry.retries,
    )


def current_backend() -> Backend:
    """This process's backend, made and started on first use (after the pool has forked)."""
    global _backend  # noqa: PLW0603 (one backend per worker process)
    with _backend_lock:
        if _backend is None:
            _backend = make_backend(get_settings())
            _backend.sweep()
            _backend.start()
        return _backend


@worker_process_init.connect
def _start_backend(**_: object) -> None:
    """Warm up each pool process's backend before its first task."""
    current_backend()


@worker_init.connect
def _sweep_leftovers(**_: object) -> None:
    """Before the pool starts, remove sandboxes that dead workers left behind."""
    make_backend(get_settings()).sweep()


@worker_process_shutdown.connect
def _close_backend(**_: object) -> None:
    if _backend is not None:
        _backend.close()


def _retry_delay(retries: int) -> float:
    return float(min(2 ** (retries + 1), 30))


@celery_app.task(  # the task stores its own result, and counts its own retries
    name=EXECUTE_TASK, bind=True, max_retries=None, ignore_result=True, store_errors_even_if_ignored=True
)
def execute_task(
    self: Task[Any, Any], payload: dict[str, Any], token: str = "", priority: Priority | None = None
) -> dict[str, Any] | None:
    """Run one submission; store and return its ``ExecutionResult`` as JSON.

    A cancelled submission never starts. One refused by an in-flight cap is parked in its
    tenant's line, and this message ends storing nothing; a hand-off sends it again, marked
    ``token``, once it holds a slot (``priority`` is then the one it was submitted with).
    """
    result = _execute(self, payload, token, priority)
    if result is not None:
        celery_app.backend.store_result(str(self.request.id), result, "SUCCESS")
    return result


def _execute(
    self: Task[Any, Any], payload: dict[str, Any], token: str, priority: Priority | None
) -> dict[str, Any] | None:
    settings = get_settings()
    try:
        submission = Submission.model_validate(payload)
    except ValidationError as error:
        return rejected(str(self.request.id), f"malformed submission: {error}").model_dump(mode="json")
    gates = current_gates()
    tenant = _tenant(submission)
    with gates.cancels.running(submission.id):
        if gates.cancels.is_cancelled(submission.id):
            gates.admission.withdraw(submission.id, tenant)
            gates.in_flight.release(submission.id, tenant)  # a slot handed to it goes to the next
            return cancelled_before_start(submission, tenant).model_dump(mode="json")
        info = self.request.delivery_info or {}
        retries = int(self.request.retries)
        parked = Parked(tenant, payload, info.get("routing_key") or settings.queue,
                        priority or priority_of(info.get("priority")), retries)
        verdict = gates.in_flight.acquire(submission.id, tenant, token, parked)
        if verdict is Verdict.PARKED:
            gates.handoff.poke()  # a slot freed before it parked goes to the first in line
        if verdict is not Verdict.ACQUIRED:
            return None  # parked (it comes back when handed a slot), or a duplicate
        with gates.in_flight.held(submission.id, tenant):
            return _run(self, submission, settings, retries)


def _run(self: Task[Any, Any], submission: Submission, settings: Settings, retries: int) -> dict[str, Any]:
    backend = current_backend()
    attempt = retries + 1
    try:
        result = execute(submission, backend, settings, attempt)
    except InfrastructureFault as fault:
        if retries < settings.max_retries:
            log.warning("infrastructure fault on %s, retrying: %s", submission.id, fault)
            raise self.retry(exc=fault, countdown=_retry_delay(retries)) from fault
        result = infrastructure_error(submission, backend, attempt, fault)
    except Exception as error:  # a bug must not take the worker down or lose the result
        log.exception("execution %s failed inside the worker", submission.id)
        result = infrastructure_error(submission, backend, attempt, error)
    return result.model_dump(mode="json")


def _tenant(submission: Submission) -> str:
    tenant = submission.request.get("tenant")
    return tenant if isinstance(tenant, str) else DEFAULT_TENANT


def _store(result: ExecutionResult) -> None:
    """Store ``result`` under its own execution id, as if its own task had returned it."""
    celery_app.backend.store_result(result.id, result.model_dump(mode="json"), "SUCCESS")


@celery_app.task(name=EXECUTE_INDEXED_TASK, bind=True, max_retries=None)
def execute_indexed_task(self: Task[Any, Any], payloads: list[dict[str, Any]]) -> dict[str, int]:
    """Run a batch's submissions as Kubernetes Indexed Jobs; store one result per execution id.

    Other backends send each submission on as a single execution. Cancelled submissions never
    start; those an in-flight cap refuses go back in line as a message of their own.
    """
    info = self.request.delivery_info or {}
    queue, priority = info.get("routing_key") or get_settings().queue, info.get("priority")
    backend = current_backend()
    run_indexed = getattr(backend, "run_indexed", None)
    if run_indexed is None:
        for payload in payloads:
            celery_app.send_task(EXECUTE_TASK, args=[payload], task_id=payload.get("id"), queue=queue,
                                 priority=priority)
        return {"forwarded": len(payloads)}
    submissions = [Submission.model_validate(payload) for payload in payloads]
    gates = current_gates()
    settings = get_settings()
    with ExitStack() as held:
        runnable: dict[str, Submission] = {}
        refused: list[dict[str, Any]] = []
        for submission in submissions:
            tenant = _tenant(submission)
            held.enter_context(gates.cancels.running(submission.id))
            if gates.cancels.is_cancelled(submission.id):
                gates.admission.withdraw(submission.id, tenant)
                _store(cancelled_before_start(submission, tenant))
            elif gates.in_flight.acquire(submission.id, tenant) is Verdict.ACQUIRED:
                held.enter_context(gates.in_flight.held(submission.id, tenant))
                runnable[submission.id] = submission
            else:
                refused.append(submission.model_dump(mode="json"))
        if refused and not runnable:
            raise self.retry(countdown=settings.cap_retry_seconds)
        if refused:
            celery_app.send_task(
                EXECUTE_INDEXED_TASK, args=[refused], countdown=settings.cap_retry_seconds, queue=queue,
                priority=priority,
            )
        items: list[tuple[str, ExecutionRequest]] = []
        for submission in runnable.values():
            try:
                items.append((submission.id, validate_request(submission.request, settings)))
            except RequestRejected as error:
                _store(rejected(submission.id, str(error), submission.enqueued_at))

        def on_result(execution_id: str, report: SandboxReport) -> None:
            submission = runnable[execution_id]
            _store(ExecutionResult(
                id=execution_id, attempts=1, backend=backend.name, tenant=_tenant(submission),
                enqueued_at=submission.enqueued_at, **report.model_dump(),
            ))

        run_indexed(items, on_result)
    return {"executions": len(items), "requeued": len(refused)}

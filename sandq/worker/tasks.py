"""The Celery task that workers run, and the worker-process lifecycle around it."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task
from celery.signals import worker_init, worker_process_shutdown
from pydantic import ValidationError

from sandq.broker.app import EXECUTE_TASK, celery_app
from sandq.contract import Submission
from sandq.settings import get_settings
from sandq.worker.backend import Backend, InfrastructureFault
from sandq.worker.backends import make_backend
from sandq.worker.execution import execute, infrastructure_error, rejected

log = logging.getLogger(__name__)

_backend: Backend | None = None
_backend_lock = threading.Lock()


def current_backend() -> Backend:
    """This process's backend, made on first use (after the pool has forked)."""
    global _backend  # noqa: PLW0603 (one backend per worker process)
    with _backend_lock:
        if _backend is None:
            _backend = make_backend(get_settings())
        return _backend


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


@celery_app.task(name=EXECUTE_TASK, bind=True)
def execute_task(self: Task[Any, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Run one submission; always return an ``ExecutionResult`` as JSON."""
    settings = get_settings()
    try:
        submission = Submission.model_validate(payload)
    except ValidationError as error:
        return rejected(str(self.request.id), f"malformed submission: {error}").model_dump(mode="json")
    backend = current_backend()
    attempt = int(self.request.retries) + 1
    try:
        result = execute(submission, backend, settings, attempt)
    except InfrastructureFault as fault:
        if self.request.retries < settings.max_retries:
            log.warning("infrastructure fault on %s, retrying: %s", submission.id, fault)
            raise self.retry(exc=fault, countdown=_retry_delay(self.request.retries)) from fault
        result = infrastructure_error(submission, backend, attempt, fault)
    except Exception as error:  # a bug must not take the worker down or lose the result
        log.exception("execution %s failed inside the worker", submission.id)
        result = infrastructure_error(submission, backend, attempt, error)
    return result.model_dump(mode="json")

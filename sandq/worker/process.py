"""Per-process state of a worker, and every Celery signal the worker answers.

With the threads pool (the default) one process runs every execution: one backend per worker,
so one warm pool per worker host, started when the worker is ready and closed when it stops.
Celery's prefork pool forks after import, so each pool process makes its own Redis client,
backend and gates on first use (``current``). The main process sweeps the sandboxes of dead
workers before the pool starts, beats the heartbeat that keeps its messages from being
redelivered, and hands free slots to parked executions periodically; its consumer leaves
``interactive_reserve`` slots to interactive work (``lanes``). Called by ``sandq.worker.task``;
Celery loads it through the app's ``include``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from sandq import logging_setup
from sandq.broker.admission import Admission
from sandq.broker.app import EXECUTE_TASK, celery_app
from sandq.broker.connection import outage_riding_client
from sandq.broker.routing import HANDED_OFF_PRIORITY
from sandq.broker.slots import HandedOff, HandOff, InFlight
from sandq.sandbox.backend import Backend, make_backend
from sandq.settings import Settings, get_settings
from sandq.worker import metrics
from sandq.worker.cancellation import CancelListener
from sandq.worker.heartbeat import Heartbeat
from sandq.worker.lanes import InteractiveReserve
from sandq.worker.popped import KeepPopped
from sandq.worker.queues import TenantQueues

log = logging.getLogger(__name__)

celery_app.steps["consumer"].add(TenantQueues)
celery_app.steps["consumer"].add(InteractiveReserve)
celery_app.steps["consumer"].add(KeepPopped)


class Process:
    """What one worker process holds: its Redis client, its backend, and the gates before a run."""

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.redis = outage_riding_client(settings.redis_url, settings.redis_outage_seconds)
        self.handoff = HandOff(settings, self.redis, send_handed)
        self.admission = Admission(settings, self.redis)
        self.in_flight = InFlight(settings, self.redis, on_release=self.handoff.poke)
        self.backend: Backend = make_backend(settings)
        self.cancels = CancelListener(settings, self.redis, self.backend, on_cancel=self.handoff.poke)
        self._backend_started = False
        self._lock = threading.Lock()

    def started_backend(self) -> Backend:
        """The backend, swept and started on first use (its warm pool, its watch)."""
        with self._lock:
            if not self._backend_started:
                self.backend.sweep()
                self.backend.start()
                self._backend_started = True
        return self.backend

    def close_backend(self) -> None:
        """Drain the backend, if it was started."""
        with self._lock:
            if self._backend_started:
                self.backend.close()
                self._backend_started = False


_process: Process | None = None
_process_lock = threading.Lock()
_heartbeat: Heartbeat | None = None


def current() -> Process:
    """This process's state, made on first use (again in a pool process forked from the main one)."""
    global _process  # noqa: PLW0603 (one per worker process)
    with _process_lock:
        if _process is None or _process.pid != os.getpid():
            _process = Process(get_settings())
        return _process


def send_handed(handed: HandedOff) -> None:
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


@worker_init.connect
def _before_pool(**_: object) -> None:
    """In the main process, before the pool starts: remove what dead workers left, start the heartbeat."""
    global _heartbeat  # noqa: PLW0603 (one heartbeat per worker)
    current().backend.sweep()
    _heartbeat = Heartbeat(get_settings())
    _heartbeat.start()


@worker_ready.connect
def _hand_off_periodically(**_: object) -> None:
    """The main process hands free slots to parked executions every ``handoff_seconds`` (slots of
    expired leases, parked executions no release reached); pool processes do at each release."""
    current().handoff.start()


@worker_ready.connect
def _start_shared_backend(sender: Any = None, **_: object) -> None:
    """With the threads (or solo) pool, executions run in the main process: start its backend now,
    so that its warm pool is booted before the first execution."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        current().started_backend()


@worker_process_init.connect
def _start_backend(**_: object) -> None:
    """Warm up each pool process's backend before its first task."""
    current().started_backend()


@worker_process_shutdown.connect
def _close_backend(pid: int | None = None, **_: object) -> None:
    """Drain the backend of a pool process that exits, and drop its live metrics from the sum."""
    if _process is not None and _process.pid == os.getpid():
        _process.close_backend()
    metrics.process_gone(pid or os.getpid())


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    """Stop the heartbeat once the worker has finished (or handed back) its executions."""
    if _heartbeat is not None:
        _heartbeat.stop()


@worker_shutdown.connect
def _close_shared_backend(**_: object) -> None:
    """Once its executions are over, drain the main process's backend (the threads pool's)."""
    if _process is not None and _process.pid == os.getpid():
        _process.close_backend()


@task_prerun.connect
def _task_started(sender: object = None, task_id: str | None = None, **_: object) -> None:
    logging_setup.enter_execution(task_id)
    if getattr(sender, "name", None) == EXECUTE_TASK:
        metrics.IN_FLIGHT.inc()


@task_postrun.connect
def _task_finished(sender: object = None, **_: object) -> None:
    """An execution task has ended (its result, if any, was counted when stored)."""
    logging_setup.leave_execution()
    if getattr(sender, "name", None) == EXECUTE_TASK:
        metrics.IN_FLIGHT.dec()

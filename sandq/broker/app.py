"""The Celery application: Redis broker and result backend, JSON only; the task names.

Used by the client (to send) and the worker (to run); ``celery_app`` is configured from the
environment when first imported, so only the worker and its tools import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP

from sandq.settings import Settings, get_settings

EXECUTE_TASK = "sandq.execute"
EXECUTE_INDEXED_TASK = "sandq.execute_indexed"
"""Many submissions in one message, run as Kubernetes Indexed Jobs (one result stored per id)."""


def shown_args(name: str, task_id: str, args: Sequence[Any]) -> str | None:
    """The ``argsrepr`` of a sandq message: its executions by id (None for another task's).

    Celery otherwise puts a repr of the arguments in each message's headers (``argsrepr``):
    the user's code and input files, cut at 1 KiB, which task events and ``celery inspect``
    then show to whoever watches the queue. Building it was about a sixth of a submission's CPU.
    """
    if name == EXECUTE_TASK:
        return f"({task_id})"
    if name == EXECUTE_INDEXED_TASK and args and isinstance(args[0], list):
        ids = [payload.get("id") for payload in args[0] if isinstance(payload, dict)]
        return f"({len(ids)} executions: {ids[0] if ids else None}, ...)"
    return None


class ShownByIdAMQP(AMQP):
    """Celery's message maker, with every sandq message shown by its executions' ids (``shown_args``),
    whoever sends it: a client, a worker's forward or hand-off, or a retry."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``as_task_v2`` (called with ``task_id, name, args`` first), with ``argsrepr`` set."""
        task_id, name = args[:2]
        task_args = args[2] if len(args) > 2 else kwargs.get("args")
        if kwargs.get("argsrepr") is None:
            kwargs["argsrepr"] = shown_args(name, task_id, task_args or ())
        return super().as_task_v2(*args, **kwargs)


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once, never-pickled executions."""
    app = Celery("sandq", broker=settings.redis_url, backend=settings.redis_url, amqp=ShownByIdAMQP)
    transport = {
        # A dead worker's messages come back after this; live workers refresh theirs
        # (sandq.worker.heartbeat), so a running task is never handed out twice.
        "visibility_timeout": settings.redelivery_seconds,
        # Look for the messages of dead workers several times per visibility timeout.
        "unacked_restore_interval": settings.heartbeat_seconds,
        "unacked_restore_throttle": 1,
        # A worker killed while restoring must not block restores for kombu's default 5 minutes.
        "unacked_mutex_expire": settings.redelivery_seconds,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        result_expires=settings.result_ttl_seconds,
        result_extended=False,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        # Ride out a Redis restart (AOF keeps everything) instead of failing a finished execution:
        # retry result reads and writes, with backoff up to 2 s, about 20 s in all.
        result_backend_always_retry=True,
        result_backend_max_retries=20,
        result_backend_max_sleep_between_retries_ms=2000,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
        include=["sandq.worker.task", "sandq.worker.process"],
        # Celery's consumer, surviving a Redis restart while executions run (see the module).
        worker_consumer="sandq.worker.consumer:Consumer",
    )
    return app


celery_app = create_celery(get_settings())
"""The process-wide app (``celery -A sandq.broker.app:celery_app``)."""

"""The Celery application: Redis broker and result backend, JSON only."""

from __future__ import annotations

from celery import Celery

from sandq.settings import Settings, get_settings

EXECUTE_TASK = "sandq.execute"


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once, never-pickled executions."""
    app = Celery("sandq", broker=settings.redis_url, backend=settings.redis_url)
    transport = {
        # Longer than the longest execution, so a running task is never handed out twice.
        "visibility_timeout": settings.visibility_timeout,
        # Look for the unacknowledged messages of dead workers every minute.
        "unacked_restore_interval": 60,
        "unacked_restore_throttle": 1,
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
        task_track_started=True,
        result_expires=settings.result_ttl_seconds,
        result_extended=False,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        include=["sandq.worker.tasks"],
    )
    return app


celery_app = create_celery(get_settings())
"""The process-wide app (``celery -A sandq.broker.app:celery_app``)."""

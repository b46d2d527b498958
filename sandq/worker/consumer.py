"""The worker's Celery consumer: Celery's own, which survives losing its Redis connection.

On a lost connection Celery 5.7 first ``collect()``s it, which releases its transport, then
closes it; closing the default channel restores its unacknowledged messages through that
released transport, an ``AttributeError`` that Celery takes as unrecoverable: the worker exited
whenever Redis restarted while it ran executions. Those messages are safe in Redis's unacked
hash and come back after the visibility timeout, so the error is logged and the consumer
reconnects as it does for any lost connection. The app names this class (``worker_consumer``).
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    """Celery's consumer, reconnecting even when the lost connection does not close cleanly."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Drop the lost connection (as Celery does); a failed close of its channel is not fatal."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:  # the channel's transport is already released
            log.warning("the lost broker connection did not close cleanly (%r); reconnecting", error)

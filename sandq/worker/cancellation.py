"""Cancellation on the worker side: a marker checked before running, a listener while running.

``Client.cancel`` sets a marker and announces the id on a pub/sub channel. A queued execution
sees the marker and never starts; a running one is killed through ``Backend.cancel`` by the
listener thread of the worker process that runs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from sandq.broker.keys import Keys
from sandq.sandbox.backend import Backend
from sandq.settings import Settings

log = logging.getLogger(__name__)

_RETRY_SECONDS = 0.1
"""How soon a cancellation whose sandbox has not started yet is tried again."""
_IDLE_SECONDS = 10.0
"""How long the listener blocks on its subscription when no cancellation is pending: polling
eight worker processes ten times a second cost more CPU than a sandbox's teardown."""


class CancelListener:
    """Per worker process: kills the sandboxes of running executions that get cancelled."""

    def __init__(
        self, settings: Settings, client: redis.Redis, backend: Backend, on_cancel: Callable[[str], object]
    ) -> None:
        self.redis = client
        self.backend = backend
        self.on_cancel = on_cancel
        self.keys = Keys(settings.queue)
        self._running: set[str] = set()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def is_cancelled(self, execution_id: str) -> bool:
        """True if ``execution_id`` has been cancelled."""
        return bool(self.redis.exists(self.keys.cancel_marker(execution_id)))

    @contextmanager
    def running(self, execution_id: str) -> Iterator[None]:
        """Listen for the cancellation of ``execution_id`` while the body runs.

        Enter before checking ``is_cancelled``, so that no cancellation falls in between.
        """
        self._start_listening()
        with self._lock:
            self._running.add(execution_id)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(execution_id)
                self._pending.discard(execution_id)

    def _start_listening(self) -> None:
        """Start the listener thread on first use (in the process that runs executions)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="sandq-cancel", daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.keys.cancel_channel)
                self._catch_up()
                while True:
                    wait = _RETRY_SECONDS if self._pending else _IDLE_SECONDS
                    message = pubsub.get_message(timeout=wait)
                    if message is not None:
                        self._mark(message["data"].decode())
                        self.on_cancel(message["data"].decode())
                    self._kill_pending()
            except redis.RedisError as error:
                log.warning("cancel listener lost Redis, reconnecting: %s", error)
                time.sleep(1.0)

    def _catch_up(self) -> None:
        """Mark running executions cancelled before the subscription began (none is missed:
        a later cancellation reaches the subscription, an earlier one left its marker)."""
        with self._lock:
            running = list(self._running)
        for execution_id in running:
            if self.is_cancelled(execution_id):
                self._mark(execution_id)

    def _mark(self, execution_id: str) -> None:
        with self._lock:
            if execution_id in self._running:
                self._pending.add(execution_id)

    def _kill_pending(self) -> None:
        """Cancel pending ids; the backend may not have started the sandbox yet, so retry."""
        with self._lock:
            pending = list(self._pending)
        for execution_id in pending:
            if self.backend.cancel(execution_id):
                log.info("cancelled running execution %s", execution_id)
                with self._lock:
                    self._pending.discard(execution_id)

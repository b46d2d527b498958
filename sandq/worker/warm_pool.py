"""A pool of local sandboxes started ahead of time, each handed out once.

A warm sandbox has booted gVisor and started the runner, which waits for its
job on stdin; taking one skips the boot. Limits fixed at start (cpu and
memory) come from the pool's ``Shape``, so only requests of that shape take
from it; the timeout and output caps travel with the job. If the pool's owner
dies, the runners see EOF on stdin and the sandboxes exit by themselves.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from sandq.settings import Settings
from sandq.worker.local_sandbox import LocalSandbox
from sandq.worker.oci_bundle import Shape

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 30.0
FAILURE_BACKOFF_SECONDS = 5.0


class WarmPool:
    """Keeps ``size`` ready sandboxes of one shape, refilled by a background thread."""

    def __init__(self, settings: Settings, shape: Shape, size: int) -> None:
        self.settings = settings
        self.shape = shape
        self.size = size
        self._ready: deque[LocalSandbox] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill, name="sandq-warm-pool", daemon=True)
        self._thread.start()

    def take(self) -> LocalSandbox | None:
        """A ready sandbox of this pool's shape, or None if none is ready (start one cold)."""
        with self._wake:
            while self._ready:
                sandbox = self._ready.popleft()
                self._wake.notify()
                if sandbox.alive():
                    return sandbox
                sandbox.remove()
        return None

    def ready_count(self) -> int:
        """How many sandboxes wait in the pool now."""
        with self._wake:
            return len(self._ready)

    def _refill(self) -> None:
        while True:
            with self._wake:
                while not self._closed and len(self._ready) >= self.size:
                    self._wake.wait()
                if self._closed:
                    return
            sandbox = LocalSandbox(self.settings, self.shape)
            if not sandbox.wait_ready(READY_TIMEOUT_SECONDS):
                log.warning("warm sandbox %s failed to start", sandbox.name)
                sandbox.remove()
                with self._wake:
                    self._wake.wait(FAILURE_BACKOFF_SECONDS)
                continue
            with self._wake:
                if self._closed:
                    sandbox.remove()
                    return
                self._ready.append(sandbox)

    def close(self) -> None:
        """Stop refilling and remove every idle sandbox."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=READY_TIMEOUT_SECONDS + 5)
        with self._wake:
            idle, self._ready = list(self._ready), deque()
        for sandbox in idle:
            sandbox.remove()

"""A pool of local sandboxes started ahead of time, each handed out once.

A warm sandbox has booted gVisor and started the runner, which waits for its
job on stdin; taking one skips the boot. Limits fixed at start (cpu and
memory) come from the pool's ``Shape``, so only requests of that shape take
from it; the timeout and output caps travel with the job. If the pool's owner
dies, the runners see EOF on stdin and the sandboxes exit by themselves.

Refills run only while no execution does (``busy``): booting competes for the
same cores as running sandboxes, and under load a warm pool would only add
sandboxes in flight, not throughput. A request that finds the pool empty takes
the sandbox still booting, if any, rather than starting a second one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from sandq.sandbox.gvisor.bundle import Shape
from sandq.sandbox.gvisor.sandbox import LocalSandbox
from sandq.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 30.0
FAILURE_BACKOFF_SECONDS = 5.0
CLAIM_CHECK_SECONDS = 0.05
"""How often the refill thread, waiting for a boot, notices that the sandbox was taken."""


class WarmPool:
    """Keeps ``size`` ready sandboxes of one shape, refilled by a background thread when idle."""

    def __init__(self, settings: Settings, shape: Shape, size: int) -> None:
        self.settings = settings
        self.shape = shape
        self.size = size
        self._ready: deque[LocalSandbox] = deque()
        self._booting: LocalSandbox | None = None
        self._running = 0
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill, name="sandq-warm-pool", daemon=True)
        self._thread.start()

    def take(self) -> LocalSandbox | None:
        """A sandbox of this pool's shape (ready, or still booting), or None: start one cold."""
        with self._wake:
            while self._ready:
                sandbox = self._ready.popleft()
                self._wake.notify_all()
                if sandbox.alive():
                    return sandbox
                sandbox.remove()
            booting, self._booting = self._booting, None
            self._wake.notify_all()
            return booting  # a booting sandbox is used as a cold one would be: its job waits in stdin

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark an execution running in this process: no refill starts meanwhile."""
        with self._wake:
            self._running += 1
        try:
            yield
        finally:
            with self._wake:
                self._running -= 1
                self._wake.notify_all()

    def ready_count(self) -> int:
        """How many sandboxes wait in the pool now."""
        with self._wake:
            return len(self._ready)

    def _refill(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (len(self._ready) >= self.size or self._running):
                    self._wake.wait()
                if self._closed:
                    return
            sandbox = LocalSandbox(self.settings, self.shape)
            with self._wake:
                self._booting = sandbox
            if self._boot(sandbox):
                continue
            log.warning("warm sandbox %s failed to start", sandbox.name)
            sandbox.remove()
            with self._wake:
                self._wake.wait(FAILURE_BACKOFF_SECONDS)

    def _boot(self, sandbox: LocalSandbox) -> bool:
        """Wait for ``sandbox`` to be ready and pool it; True unless it failed (it was taken: True)."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            readable = sandbox.ready_to_read(CLAIM_CHECK_SECONDS)
            with self._wake:  # the taker reads the sandbox's output only once it holds it
                if self._booting is not sandbox or self._closed:  # taken, or left for close()
                    return True
                if not (readable or time.monotonic() >= deadline or not sandbox.alive()):
                    continue
                self._booting = None
                if not sandbox.wait_ready(0):
                    return False
                self._ready.append(sandbox)
                return True

    def close(self) -> None:
        """Stop refilling and remove every idle sandbox."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=READY_TIMEOUT_SECONDS + 5)
        with self._wake:
            idle, self._ready = list(self._ready), deque()
            booting, self._booting = self._booting, None
        for sandbox in [*idle, *([booting] if booting else [])]:
            sandbox.remove()

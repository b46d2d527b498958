"""A backend for queue benchmarks only: it runs no code, it sleeps for the run time.

Selected by ``SANDQ_BACKEND=simulated``. Each run sleeps ``simulated_run_seconds`` (or the
request label ``simulated_seconds``) and is recorded in Redis, so that a benchmark can count
the runs of each id and the runs in flight at any moment. Never use it to serve real requests.
"""

from __future__ import annotations

import json
import threading
import time

import redis

from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.sandbox.backend import Backend, OnOutput
from sandq.settings import Settings


class SimulatedLatencyBackend(Backend):
    """Sleeps instead of running a sandbox; cancellable while it sleeps."""

    name = "simulated"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.keys = Keys(settings.queue)
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def run(
        self, execution_id: str, request: ExecutionRequest, on_output: OnOutput | None = None,
        *, priority: Priority = "interactive",
    ) -> SandboxReport:
        """Sleep for the run time, or until cancelled; record the run (it prints nothing to stream)."""
        seconds = float(request.labels.get("simulated_seconds", self.settings.simulated_run_seconds))
        stop = threading.Event()
        with self._lock:
            self._running[execution_id] = stop
        started_at, start = now(), time.time()
        try:
            cancelled = stop.wait(seconds)
        finally:
            with self._lock:
                self._running.pop(execution_id, None)
        end = time.time()
        run = {"id": execution_id, "start": start, "end": end}
        self.redis.rpush(self.keys.simulated_runs, json.dumps(run))
        return SandboxReport(
            status=Status.CANCELLED if cancelled else Status.SUCCEEDED,
            exit_code=None if cancelled else 0,
            sandbox_name=f"simulated-{execution_id}",
            started_at=started_at,
            finished_at=now(),
            error="cancelled while running" if cancelled else None,
        )

    def cancel(self, execution_id: str) -> bool:
        """Wake the sleeping run, which ends as ``cancelled``."""
        with self._lock:
            stop = self._running.get(execution_id)
        if stop is None:
            return False
        stop.set()
        return True

    def close(self) -> None:
        """Close the Redis connection."""
        self.redis.close()

"""What the sandboxes' metrics count, where it happens: how each local execution got its sandbox,
local boots, the warm pool, and failed Kubernetes API calls.

Called by the backends (``gvisor``, ``kubernetes``); served with the worker's metrics
(``sandq.worker.metrics_server``). ``sandq worker`` points prometheus_client at its
multiprocess directory before anything imports this module.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

Start = Literal["ready", "booting", "cold"]
"""How a local execution got its sandbox: a warm one that had booted, a warm one still booting
(its job waited in stdin), or one started for it."""

SANDBOX_STARTS = Counter(
    "sandq_sandbox_starts",
    "Local executions by how their sandbox started: ready (warm, booted), booting (warm, still "
    "booting when taken), cold (started for the execution).",
    ["start"],
)
BOOT_SECONDS = Histogram(
    "sandq_sandbox_boot_seconds",
    "Seconds from starting a local sandbox to its runner waiting for its job, warm or cold.",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60),
)
WARM_POOL = Gauge(
    "sandq_warm_pool_sandboxes",
    "This worker's warm sandboxes, by state: ready, booting, and the target the pool keeps.",
    ["state"],
    multiprocess_mode="livesum",
)
API_ERRORS = Counter(
    "sandq_kubernetes_api_errors",
    "Failed Kubernetes API calls, by verb and HTTP status code (or unreachable, timeout).",
    ["verb", "code"],
)


def record_start(start: Start) -> None:
    """Count one local execution's sandbox, by how it started."""
    SANDBOX_STARTS.labels(start=start).inc()


def record_boot(seconds: float) -> None:
    """Observe one local sandbox's boot, from its start to its runner's readiness."""
    BOOT_SECONDS.observe(seconds)


def record_warm_pool(ready: int, booting: int, target: int) -> None:
    """Set the warm pool's gauges."""
    for state, value in (("ready", ready), ("booting", booting), ("target", target)):
        WARM_POOL.labels(state=state).set(value)


def record_api_error(verb: str, code: str) -> None:
    """Count one failed Kubernetes API call: ``verb`` (create, get, list, delete, ...) and ``code``
    (the HTTP status, ``timeout`` or ``unreachable``)."""
    API_ERRORS.labels(verb=verb, code=code).inc()

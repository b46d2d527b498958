"""The worker's Prometheus metrics: executions, waits, run times, queues (the sandboxes' own, such as
Kubernetes API errors and warm starts, are counted in ``sandq.sandbox.metrics``).

Executions are counted from Celery's task signals (``sandq.worker.process``) in the pool
process that ran them; with
``sandq worker`` those processes write to prometheus_client's multiprocess files and the main
process serves the sum (see ``sandq.worker.metrics_server``). Queue depths are read from Redis
at scrape time by ``QueueCollector``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sandq.client.client import Client
from sandq.client.status import snapshot
from sandq.settings import Settings

log = logging.getLogger(__name__)

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

EXECUTIONS = Counter(
    "sandq_executions", "Executions finished, by status, backend and tenant.", ["status", "backend", "tenant"]
)
QUEUE_WAIT = Histogram(
    "sandq_queue_wait_seconds",
    "Seconds from enqueueing to the sandbox starting.",
    ["backend"],
    buckets=_SECONDS,
)
RUN_TIME = Histogram("sandq_run_seconds", "Seconds a sandbox ran.", ["backend"], buckets=_SECONDS)
IN_FLIGHT = Gauge(
    "sandq_worker_in_flight", "Executions this worker is handling now.", multiprocess_mode="livesum"
)


def record_result(result: Mapping[str, Any]) -> None:
    """Count one finished execution (an ``ExecutionResult`` as JSON) and observe its times."""
    backend = str(result.get("backend") or "none")
    EXECUTIONS.labels(status=str(result["status"]), backend=backend, tenant=str(result.get("tenant"))).inc()
    for histogram, key in ((QUEUE_WAIT, "queue_seconds"), (RUN_TIME, "run_seconds")):
        seconds = result.get(key)
        if isinstance(seconds, int | float):
            histogram.labels(backend=backend).observe(max(float(seconds), 0.0))


def process_gone(pid: int) -> None:
    """Drop a pool process's live gauges from the sum once it exits."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class SettledFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, leaving out the files of processes that have
    created theirs but not sized it yet: read at 0 bytes, one such file fails the whole scrape
    (prometheus/client_python#1199)."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]
        self.path = path

    def collect(self) -> Iterable[Metric]:
        """The merged samples of every file that holds any."""
        files = [str(f) for f in Path(self.path).glob("*.db") if _has_data(f)]
        merged: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def _has_data(file: Path) -> bool:
    try:
        return file.stat().st_size > 0
    except FileNotFoundError:  # its process was just marked dead
        return False


class QueueCollector(Collector):
    """Queue depth by queue and tenant, queued and running executions by tenant: Redis reads per scrape.

    These are deployment-wide: every worker reports the same values (aggregate with ``max``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None

    def collect(self) -> Iterator[Metric]:
        """Read the queues now; if that fails, report ``sandq_redis_up 0`` and nothing else."""
        up = GaugeMetricFamily("sandq_redis_up", "1 if Redis answered this scrape's queue reads, else 0.")
        try:
            if self._client is None:
                self._client = Client(self.settings)
            state = snapshot(self._client, worker_timeout=None)
        except Exception as error:  # the execution metrics must still be served
            log.warning("metrics: could not read the queues: %r", error)
            up.add_metric([], 0)
            yield up
            return
        depth = GaugeMetricFamily(
            "sandq_queue_depth", "Messages waiting in a queue (all priorities).", labels=["queue", "tenant"]
        )
        queued = GaugeMetricFamily(
            "sandq_queued_executions", "Admitted executions not started yet.", labels=["tenant"]
        )
        in_flight = GaugeMetricFamily(
            "sandq_in_flight_executions", "Executions running now on all workers.", labels=["tenant"]
        )
        for row in state.tenants:
            depth.add_metric([row.queue, row.tenant], row.messages)
            queued.add_metric([row.tenant], row.queued)
            in_flight.add_metric([row.tenant], row.in_flight)
        reserved = GaugeMetricFamily(
            "sandq_reserved_messages",
            "Messages delivered to workers and not acknowledged yet.",
            value=state.reserved_by_workers,
        )
        up.add_metric([], 1)
        yield from (depth, queued, in_flight, reserved, up)

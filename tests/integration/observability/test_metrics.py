"""/metrics of a real worker moves with its executions (and how their sandboxes started); queue depth."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.worker.metrics import QueueCollector
from tests.conftest import RedisServer, free_port, make_settings
from tests.integration.observability.conftest import Observed, Samples, sample

WAIT = 120
BACKEND = {"backend": "gvisor"}


def test_executions_by_status_and_histograms_move(observed: Observed) -> None:
    before = observed.scrape()
    codes = ["print('ok')", "raise SystemExit(3)"]
    with ThreadPoolExecutor(2) as pool:  # two pool processes: the main process sums both
        results = list(pool.map(lambda code: observed.client.run(ExecutionRequest(code=code), WAIT), codes))
    assert [r.status for r in results] == [Status.SUCCEEDED, Status.FAILED]

    def counted(samples: Samples) -> float:  # the worker counts a result just after storing it
        return sum(sample(samples, "sandq_executions_total", status=status, tenant="default", **BACKEND)
                   - sample(before, "sandq_executions_total", status=status, tenant="default", **BACKEND)
                   for status in ("succeeded", "failed"))

    after = wait_for(observed.scrape, lambda samples: counted(samples) >= 2)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    for status in ("succeeded", "failed"):
        assert delta("sandq_executions_total", status=status, tenant="default", **BACKEND) == 1
    assert delta("sandq_run_seconds_count", **BACKEND) == 2
    assert delta("sandq_queue_wait_seconds_count", **BACKEND) == 2
    assert delta("sandq_run_seconds_sum", **BACKEND) > 0
    assert delta("sandq_run_seconds_bucket", le="+Inf", **BACKEND) == 2
    assert delta("sandq_sandbox_starts_total", start="cold") == 2  # this worker keeps no warm pool
    assert delta("sandq_sandbox_boot_seconds_count") == 2
    assert delta("sandq_sandbox_boot_seconds_sum") > 0
    assert sample(after, "sandq_redis_up") == 1
    assert (
        "sandq_queue_depth",
        frozenset({("queue", observed.settings.queue), ("tenant", "default")}),
    ) in after


def wait_for(scrape: Callable[[], Samples], check: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + 60
    while not check(samples := scrape()):
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)
    return samples


def test_in_flight_while_running(observed: Observed) -> None:
    handle = observed.client.submit(ExecutionRequest(code="import time\ntime.sleep(4)"))
    running = wait_for(observed.scrape, lambda s: sample(s, "sandq_worker_in_flight") == 1)
    assert sample(running, "sandq_in_flight_executions", tenant="default") >= 1
    assert handle.result(WAIT).status is Status.SUCCEEDED
    wait_for(observed.scrape, lambda s: sample(s, "sandq_worker_in_flight") == 0)


def collected(settings: Settings) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in QueueCollector(settings).collect()
        for s in family.samples
    }


def test_queue_depth_counts_every_priority_and_tenant(redis_server: RedisServer, tmp_path: Path) -> None:
    """No worker consumes this queue: what is submitted stays, in kombu's per-priority lists."""
    settings = make_settings(redis_server.url, tmp_path, queue=f"depth-{uuid.uuid4().hex[:8]}")
    client = Client(settings)
    try:
        client.submit(ExecutionRequest(code="print(1)"), priority="interactive")
        client.submit(ExecutionRequest(code="print(2)"), priority="batch")
        client.submit(ExecutionRequest(code="print(3)", tenant="acme"), priority="batch")
        samples = collected(settings)
    finally:
        client.close()
    assert sample(samples, "sandq_queue_depth", queue=settings.queue, tenant="default") == 2
    assert sample(samples, "sandq_queue_depth", queue=f"{settings.queue}.acme", tenant="acme") == 1
    assert sample(samples, "sandq_queued_executions", tenant="default") == 2
    assert sample(samples, "sandq_queued_executions", tenant="acme") == 1
    assert sample(samples, "sandq_redis_up") == 1


def test_queue_metrics_report_redis_down(tmp_path: Path) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    assert collected(settings) == {("sandq_redis_up", frozenset()): 0.0}

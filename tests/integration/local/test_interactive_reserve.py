"""A worker's interactive reserve: batch work leaves a slot to interactive work, and takes it back when
interactive work has gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sandq import Client, ExecutionRequest, Status
from sandq.broker.routing import PRIORITY_VALUES
from tests.conftest import RedisServer, WorkerProcess, make_settings

RESERVE_SECONDS = 8.0
SLEEP = "import time\ntime.sleep(120)"


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def running_batch(client: Client) -> int:
    """How many batch executions the worker runs now (its active Celery tasks of batch priority)."""
    active = client.app.control.inspect(timeout=2).active() or {}
    priorities = [(t.get("delivery_info") or {}).get("priority") for tasks in active.values() for t in tasks]
    return priorities.count(PRIORITY_VALUES["batch"])


def test_batch_work_leaves_a_slot_to_interactive_work_then_takes_it_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(
        redis_server.url, tmp_path, concurrency=2, interactive_reserve=1,
        interactive_reserve_seconds=RESERVE_SECONDS, warm_pool_min=1,
    )
    client = Client(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    batch: list[str] = []
    try:
        worker.wait_ready(client)
        assert client.run(ExecutionRequest(code="print('here')"), timeout=120).status is Status.SUCCEEDED
        batch = [client.submit(ExecutionRequest(code=SLEEP, timeout_seconds=180), priority="batch").id
                 for _ in range(3)]
        wait_for(lambda: running_batch(client) == 1, timeout=60)
        # Both slots would be batch work's without the reserve, and this would wait two minutes.
        quick = client.run(ExecutionRequest(code="print('quick')"), timeout=60)
        assert (quick.status, quick.stdout) == (Status.SUCCEEDED, "quick\n")
        assert running_batch(client) == 1
        assert not any(client.async_result(i).ready() for i in batch)
        # Nothing interactive for RESERVE_SECONDS: batch work takes the reserved slot back.
        wait_for(lambda: running_batch(client) == 2, timeout=RESERVE_SECONDS + 30)
    finally:
        client.cancel(*batch)
        worker.stop()
        client.close()

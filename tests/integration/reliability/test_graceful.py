"""Graceful shutdown: on SIGTERM a worker finishes its executions, exits 0 and leaves no sandbox."""

from __future__ import annotations

from pathlib import Path

import redis

from sandq import Client, ExecutionRequest, Status
from sandq.broker.routing import tenant_queues
from tests.conftest import RedisServer, make_settings
from tests.integration.reliability.conftest import Crashes, ProbedWorker, sandboxes, unacked_of, wait_for


def test_sigterm_drains_in_flight_executions_and_the_warm_pool(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url, tmp_path, redelivery_seconds=5, concurrency=2, warm_pool_min=1, warm_pool_max=1
    )
    client = Client(settings)
    crashes = Crashes(redis.Redis.from_url(settings.redis_url), settings.queue)
    worker = ProbedWorker(settings, tmp_path / "worker.log", concurrency=2)
    successor: ProbedWorker | None = None
    try:
        worker.wait_ready()
        sleepers = [f"sleep-{n}" for n in range(2)]
        quick = [f"quick-{n}" for n in range(4)]
        for execution_id in sleepers:
            code = f"import time\ntime.sleep(3)\nprint('{execution_id}')"
            client.submit(ExecutionRequest(code=code, timeout_seconds=30), execution_id=execution_id)
        for execution_id in quick:
            client.submit(ExecutionRequest(code=f"print('{execution_id}')"), execution_id=execution_id)
        wait_for(lambda: all(crashes.started(i) for i in sleepers), 60, "both sleeps started")
        worker.proc.terminate()
        assert worker.proc.wait(90) == 0, worker.log.read_text()[-3000:]
        # What it was running finished before it exited, and its sandboxes (warm pool too) are gone.
        assert all(client.async_result(i).ready() for i in sleepers)
        assert sandboxes(settings) == ([], [])
        assert unacked_of(crashes.client, set(tenant_queues(settings, []))) == []

        successor = ProbedWorker(settings, tmp_path / "successor.log", concurrency=2)
        for execution_id in sleepers + quick:
            result = client.wait(execution_id, timeout=120)
            assert (result.status, result.stdout) == (Status.SUCCEEDED, f"{execution_id}\n")
        assert {i: len(s) for i, s in crashes.starts().items()} == dict.fromkeys(sleepers + quick, 1)
        successor.proc.terminate()
        assert successor.proc.wait(90) == 0
        assert sandboxes(settings) == ([], [])
    finally:
        worker.stop()
        if successor is not None:
            successor.stop()
        client.close()

"""Cancellation: a queued execution never starts; a running one has its sandbox killed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from sandq.broker.keys import Keys
from sandq.client.client import Client
from sandq.contract import ExecutionRequest, Status
from sandq.settings import Settings
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory, raw_redis


def wait_running(settings: Settings, execution_id: str) -> None:
    keys, raw = Keys(settings.queue), raw_redis(settings)
    deadline = time.monotonic() + WAIT
    while raw.zscore(keys.in_flight, execution_id) is None:
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)


def test_cancel_queued_and_running_on_simulated_backend(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    start_worker(settings, concurrency=1)
    client = make_client(settings)
    running = client.submit({"code": "pass", "labels": {"simulated_seconds": "600"}})
    queued = client.submit({"code": "pass"})
    wait_running(settings, running.id)
    queued.cancel()
    running.cancel()
    assert running.result(timeout=WAIT).status is Status.CANCELLED
    late = queued.result(timeout=WAIT)
    assert (late.status, late.attempts) == (Status.CANCELLED, 0)
    recorded = raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)
    runs = [json.loads(r)["id"] for r in recorded]
    assert runs == [running.id]  # the queued one never started
    assert raw_redis(settings).zcard(Keys(settings.queue).queued) == 0


@pytest.mark.usefixtures("worker")
def test_cancel_running_gvisor_sandbox(client: Client, settings: Settings) -> None:
    handle = client.submit(ExecutionRequest(code="import time\nprint('up', flush=True)\ntime.sleep(120)"))
    wait_running(settings, handle.id)
    time.sleep(1.0)  # let the sandbox come up
    started = time.monotonic()
    handle.cancel()
    result = handle.result(timeout=WAIT)
    assert result.status is Status.CANCELLED
    assert time.monotonic() - started < 60  # far sooner than its own two minutes

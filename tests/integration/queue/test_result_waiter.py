"""The async result waiter: many waits on one connection, no threads, timeouts, a lost connection."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis

from sandq.client import waiting
from sandq.client.client import Client, ResultTimeout
from sandq.contract import ExecutionRequest, Status
from tests.integration.queue.conftest import SettingsFactory, WorkerFactory

WAIT = 60


async def test_many_waits_share_one_waiter_without_threads(
    queue_settings: SettingsFactory, start_worker: WorkerFactory
) -> None:
    settings = queue_settings(simulated_run_seconds=0.3)
    client = Client(settings)
    start_worker(settings, concurrency=8)
    threads = threading.active_count()
    try:
        handles = [client.submit(ExecutionRequest(code="print(1)")) for _ in range(40)]
        async with client.result_waiter() as waiter:
            results = await asyncio.gather(*(waiter.wait(h.id, WAIT) for h in handles))
            assert threading.active_count() == threads  # nothing waits on a thread
        assert [r.id for r in results] == [h.id for h in handles]
        assert {r.status for r in results} == {Status.SUCCEEDED}
    finally:
        client.close()


async def test_a_stored_result_is_found_and_a_missing_one_times_out(
    queue_settings: SettingsFactory, start_worker: WorkerFactory
) -> None:
    settings = queue_settings()
    client = Client(settings)
    start_worker(settings)
    try:
        done = client.submit(ExecutionRequest(code="print(1)"))
        done.result(WAIT)
        async with client.result_waiter() as waiter:
            assert (await waiter.wait(done.id, 1)).status is Status.SUCCEEDED
            with pytest.raises(ResultTimeout):
                await waiter.wait("no-such-execution", 0.3)
        handle = client.submit(ExecutionRequest(code="print(1)"))
        assert (await handle.result_async(WAIT)).id == handle.id
    finally:
        client.close()


async def test_a_result_published_while_the_channel_is_down_still_arrives(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "RECHECK_SECONDS", 0.5)
    settings = queue_settings(simulated_run_seconds=1.0)
    client = Client(settings)
    start_worker(settings)
    admin = redis.Redis.from_url(settings.redis_url)
    try:
        async with client.result_waiter() as waiter:
            handle = client.submit(ExecutionRequest(code="print(1)"))
            wait = asyncio.create_task(waiter.wait(handle.id, WAIT))
            await asyncio.sleep(0.2)
            assert admin.client_kill_filter(_type="pubsub") >= 1
            assert (await wait).status is Status.SUCCEEDED
    finally:
        admin.close()
        client.close()

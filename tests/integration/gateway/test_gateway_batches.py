"""Gateway batches beyond the tenant's queue cap: the rest waits in Redis and goes in as room frees up.

A real uvicorn server (in this process, on its own thread) in front of a real worker on the
simulated backend, so that the queue, not the sandboxes, sets the pace.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from sandq.client.client import Client
from sandq.gateway.app import create_app
from sandq.gateway.credentials import ApiKeys
from sandq.settings import Settings
from tests.conftest import RedisServer, free_port, make_settings
from tests.integration.gateway.conftest import gateway_settings
from tests.integration.queue.conftest import SimWorker

WAIT = 60


@pytest.fixture
def capped(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url, tmp_path, backend="simulated", simulated_run_seconds=0.3,
        tenant_overrides={"bulk": {"max_queued": 2}},
    )


@pytest.fixture
def served(capped: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A gateway on ``capped`` settings with a worker behind it; its URL and a key of tenant ``bulk``."""
    config = gateway_settings(poll_seconds=0.1)
    worker = SimWorker(capped, tmp_path / "worker.log", concurrency=2)
    client = Client(capped)
    server = uvicorn.Server(uvicorn.Config(create_app(capped, config), port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        worker.wait_ready(client)
        while not server.started:
            time.sleep(0.05)

        async def make_key() -> str:
            connection = aioredis.Redis.from_url(capped.redis_url)
            try:
                return (await ApiKeys(connection, config, capped.queue).create("bulk")).token
            finally:
                await connection.aclose()

        yield f"http://127.0.0.1:{server.config.port}", asyncio.run(make_key())
    finally:
        server.should_exit = True
        thread.join(30)
        worker.stop()
        client.close()


def test_a_batch_beyond_the_cap_waits_and_completes(served: tuple[str, str]) -> None:
    url, key = served
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        body = {"requests": [{"code": f"print({n})"} for n in range(8)]}
        created = http.post("/v1/batches", json=body).json()
        seen_waiting = False
        deadline = time.monotonic() + WAIT
        while (progress := http.get(f"/v1/batches/{created['id']}").json())["done"] < 8:
            seen_waiting = seen_waiting or progress["unsubmitted"] > 0
            assert time.monotonic() < deadline, progress
            time.sleep(0.05)
        assert seen_waiting, "the cap of 2 queued never held requests back"
        assert progress == {"id": created["id"], "total": 8, "done": 8, "unsubmitted": 0,
                            "by_status": {"succeeded": 8}, "webhook": None}
        results = http.get(f"/v1/batches/{created['id']}/results").text
        lines = [json.loads(line) for line in results.splitlines()]
        assert [line["id"] for line in lines] == created["execution_ids"]
        assert [line["tenant"] for line in lines] == ["bulk"] * 8
        too_many = http.post("/v1/batches", json={"requests": [{"code": "1"}] * 1001})
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "requests"]

"""The heartbeat: a live worker keeps its unacknowledged messages, however long they run."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import redis
from celery.worker import state

from sandq import Client, ExecutionRequest, Status
from sandq.broker.routing import tenant_queues
from sandq.worker.heartbeat import UNACKED_INDEX_KEY, Heartbeat, held_delivery_tags
from tests.conftest import RedisServer, make_settings
from tests.integration.reliability.conftest import Crashes, ProbedWorker, unacked_of


class FakeRequest:
    """Stands for a Celery request: only its message's delivery tag matters here."""

    def __init__(self, tag: str) -> None:
        self.message = SimpleNamespace(delivery_tag=tag)


def test_held_tags_are_those_of_reserved_and_scheduled_requests() -> None:
    reserved, scheduled = FakeRequest("tag-reserved"), FakeRequest("tag-scheduled")
    state.reserved_requests.add(reserved)
    state.scheduled_requests.add(scheduled)
    try:
        assert held_delivery_tags() == ["tag-reserved", "tag-scheduled"]
    finally:
        state.reserved_requests.discard(reserved)
        state.scheduled_requests.discard(scheduled)
    assert held_delivery_tags() == []


def test_a_beat_refreshes_only_messages_still_unacknowledged(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:
        client = redis.Redis.from_url(server.url)
        client.zadd(UNACKED_INDEX_KEY, {"held": 1.0, "other": 1.0})
        heartbeat = Heartbeat(make_settings(server.url, tmp_path), client)
        before = time.time()
        assert heartbeat.beat(["held", "acked"]) == 1
        assert client.zscore(UNACKED_INDEX_KEY, "held") >= before  # type: ignore[operator]
        assert client.zscore(UNACKED_INDEX_KEY, "other") == 1.0
        assert client.zscore(UNACKED_INDEX_KEY, "acked") is None  # acknowledged meanwhile: not brought back
    finally:
        server.stop()


def test_an_execution_longer_than_the_visibility_timeout_runs_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url, tmp_path, redelivery_seconds=2, concurrency=1, warm_pool_max=0
    )
    client = Client(settings)
    crashes = Crashes(redis.Redis.from_url(settings.redis_url), settings.queue)
    worker = ProbedWorker(settings, tmp_path / "worker.log", concurrency=1)
    try:
        worker.wait_ready()
        code = "import time\ntime.sleep(8)\nprint('long')"  # four visibility timeouts
        result = client.run(ExecutionRequest(code=code, timeout_seconds=30), timeout=120)
        assert (result.status, result.stdout) == (Status.SUCCEEDED, "long\n")
        time.sleep(2 * settings.redelivery_seconds)  # a restored copy would have started by now
        assert [len(s) for s in crashes.starts().values()] == [1]
        assert unacked_of(crashes.client, set(tenant_queues(settings, []))) == []
    finally:
        worker.stop()
        client.close()

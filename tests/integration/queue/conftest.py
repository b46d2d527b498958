"""Fixtures for the queue tests: simulated-backend workers on their own queue namespace."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sandq.client.client import Client
from sandq.settings import Settings
from tests.conftest import RedisServer, WorkerProcess, make_settings

WAIT = 60


class SimWorker(WorkerProcess):
    """A real ``sandq worker`` process on the simulated backend, with a threads pool."""

    stop_seconds = 30.0

    def __init__(self, settings: Settings, log: Path, concurrency: int) -> None:
        args = ("-m", "sandq", "worker", "--pool", "threads", f"--concurrency={concurrency}")
        super().__init__(settings, log, args=args)


SettingsFactory = Callable[..., Settings]
WorkerFactory = Callable[..., SimWorker]


@pytest.fixture
def queue_settings(redis_server: RedisServer, tmp_path: Path) -> SettingsFactory:
    """Settings on the simulated backend, in a fresh queue namespace of the session's Redis."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"backend": "simulated", "queue": f"q-{uuid.uuid4().hex[:8]}"}
        values.update(overrides)
        return make_settings(redis_server.url, tmp_path, **values)

    return make


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start simulated workers (ready when returned); all are stopped after the test."""
    workers: list[SimWorker] = []

    def start(settings: Settings, concurrency: int = 4) -> SimWorker:
        worker = SimWorker(settings, tmp_path / f"worker-{len(workers)}.log", concurrency)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[[Settings], Client]]:
    """Clients for given settings, closed after the test."""
    clients: list[Client] = []

    def make(settings: Settings) -> Client:
        clients.append(Client(settings))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def raw_redis(settings: Settings) -> redis.Redis:
    """A plain Redis client for ``settings``."""
    return redis.Redis.from_url(settings.redis_url)

"""A real gVisor worker serving /metrics on a free port, with JSON logs (the default)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandq.client.client import Client
from sandq.settings import Settings
from tests.conftest import RedisServer, WorkerProcess, free_port, make_settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Observed:
    """The worker, a client of its queue, and where its metrics are served."""

    worker: WorkerProcess
    client: Client
    settings: Settings

    def scrape(self) -> Samples:
        """Every sample of ``/metrics``, keyed by name and labels."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 if absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="session")
def observed(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    if os.geteuid() != 0 or shutil.which("runsc") is None:
        pytest.fail("the gVisor tests need root and runsc: run `make test`, which installs it")
    base = tmp_path_factory.mktemp("observed")
    settings = make_settings(
        redis_server.url, base, concurrency=2, warm_pool_max=0, metrics_port=free_port(),
        task_events=True,
    )
    client = Client(settings)
    worker = WorkerProcess(settings, base / "worker.log")
    try:
        worker.wait_ready(client)
        observed = Observed(worker, client, settings)
        deadline = time.monotonic() + 30
        while True:
            try:
                observed.scrape()
                break
            except OSError:
                assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
                time.sleep(0.1)
        yield observed
    finally:
        worker.stop()
        client.close()

"""Fairness and priority in the order executions start, on a real worker."""

from __future__ import annotations

import json
from collections.abc import Callable

from sandq.broker.keys import Keys
from sandq.client.client import Client
from sandq.settings import Settings
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory, raw_redis


def start_order(settings: Settings) -> list[str]:
    runs = [json.loads(r) for r in raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)]
    return [r["id"] for r in sorted(runs, key=lambda r: r["start"])]


def test_small_tenant_is_not_starved_by_a_big_one(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(simulated_run_seconds=0.01)
    client = make_client(settings)
    big = [client.submit({"code": "pass", "tenant": "big"}) for _ in range(60)]
    small = [client.submit({"code": "pass", "tenant": "small"}) for _ in range(5)]
    start_worker(settings, concurrency=1)
    for handle in big + small:
        handle.result(timeout=WAIT)
    order = start_order(settings)
    last_small = max(order.index(h.id) for h in small)
    assert last_small < 2 * len(small) + 3  # round robin: big, small, big, small, ... not 60 first


def test_interactive_goes_before_queued_batch(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(simulated_run_seconds=0.01)
    client = make_client(settings)
    batch = client.submit_batch([{"code": "pass"}] * 40)
    interactive = [client.submit({"code": "pass"}) for _ in range(3)]
    start_worker(settings, concurrency=1)
    batch.results(timeout=WAIT)
    for handle in interactive:
        handle.result(timeout=WAIT)
    order = start_order(settings)
    assert max(order.index(h.id) for h in interactive) < 3 + 2

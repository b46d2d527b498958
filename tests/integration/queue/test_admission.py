"""Admission caps hold under concurrent submitters; a refusal enqueues nothing."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable

import pytest

from sandq.broker.errors import QueueFull, SubmissionRefused, TenantQuotaExceeded
from sandq.broker.keys import Keys
from sandq.client.client import Client
from sandq.settings import Settings
from tests.integration.queue.conftest import SettingsFactory, raw_redis


def queue_depth(client: Client, queue: str) -> int:
    with client.app.connection_for_read() as connection:
        return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)


def submit_many(settings: Settings, count: int, tenant: str) -> tuple[int, int]:
    client = Client(settings)
    admitted = refused = 0
    for _ in range(count):
        try:
            client.submit({"code": "pass", "tenant": tenant})
            admitted += 1
        except SubmissionRefused:
            refused += 1
    client.close()
    return admitted, refused


def test_global_cap_holds_under_threads(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_queued=100)
    counts: list[tuple[int, int]] = []
    threads = [
        threading.Thread(target=lambda: counts.append(submit_many(settings, 40, "default"))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(a for a, _ in counts) == 100
    assert sum(r for _, r in counts) == 140
    client = Client(settings)
    assert queue_depth(client, settings.queue) == 100  # refused submissions enqueued nothing
    assert raw_redis(settings).zcard(Keys(settings.queue).queued) == 100
    client.close()


def _process(settings_json: str, out: multiprocessing.Queue[tuple[int, int]]) -> None:
    out.put(submit_many(Settings.model_validate_json(settings_json), 30, "acme"))


def test_tenant_cap_holds_under_processes(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_queued_per_tenant=1000, tenant_overrides={"acme": {"max_queued": 25}})
    out: multiprocessing.Queue[tuple[int, int]] = multiprocessing.get_context("spawn").Queue()
    procs = [
        multiprocessing.get_context("spawn").Process(target=_process, args=(settings.model_dump_json(), out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    counts = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(a for a, _ in counts) == 25
    assert sum(r for _, r in counts) == 95
    client = Client(settings)
    assert queue_depth(client, f"{settings.queue}.acme") == 25
    client.submit({"code": "pass", "tenant": "other"})  # other tenants keep their own cap
    client.close()


def test_refusal_is_typed_fast_and_carries_retry_after(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    client = make_client(queue_settings(max_queued=3, max_queued_per_tenant=2, retry_after_seconds=2.5))
    client.submit({"code": "pass", "tenant": "a"})
    client.submit({"code": "pass", "tenant": "a"})
    with pytest.raises(TenantQuotaExceeded) as tenant_full:
        client.submit({"code": "pass", "tenant": "a"})
    assert tenant_full.value.retry_after == 2.5 and tenant_full.value.tenant == "a"
    client.submit({"code": "pass", "tenant": "b"})
    start = time.monotonic()
    with pytest.raises(QueueFull):
        client.submit({"code": "pass", "tenant": "c"})
    assert time.monotonic() - start < 5  # a functional bound: refusals do not wait for room


def test_same_id_is_admitted_once(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    client = make_client(settings)
    client.submit({"code": "pass"}, execution_id="same")
    client.submit({"code": "pass"}, execution_id="same")
    assert queue_depth(client, settings.queue) == 1


def test_expired_queued_entries_stop_counting(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_queued=1)
    client = make_client(settings)
    client.submit({"code": "pass"})
    keys = Keys(settings.queue)
    raw = raw_redis(settings)
    (member,) = raw.zrange(keys.queued, 0, -1)
    raw.zadd(keys.queued, {member: 1})  # as if its message had been lost long ago
    client.submit({"code": "pass"})  # the stale entry no longer holds the only place

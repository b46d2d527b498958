"""``Client.submit_batch``: progress by status, results as they finish, cancel."""

from __future__ import annotations

from collections.abc import Callable

from sandq.client.client import Client
from sandq.contract import Status
from sandq.settings import Settings
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory


def test_batch_beyond_the_queued_cap_completes_with_progress(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_queued=3, retry_after_seconds=0.2)
    client = make_client(settings)
    requests = [{"code": "pass"}] * 7 + [{"code": "pass", "timeout_seconds": -1}]
    batch = client.submit_batch(requests)
    first = batch.progress()
    assert (first.total, first.unsubmitted) == (8, 5)  # the cap holds the rest back, in the batch
    start_worker(settings, concurrency=2)
    seen = [r.id for r in batch.as_completed(timeout=WAIT)]
    assert sorted(seen) == sorted(batch.ids)  # each result once
    last = batch.progress()
    assert (last.done, last.unsubmitted) == (8, 0)
    assert last.by_status == {Status.SUCCEEDED: 7, Status.REJECTED: 1}
    assert [r.id for r in batch.results(timeout=WAIT)] == batch.ids


def test_batch_cancel_ends_every_execution_cancelled(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_queued=3, retry_after_seconds=30)
    start_worker(settings, concurrency=1)
    client = make_client(settings)
    batch = client.submit_batch([{"code": "pass", "labels": {"simulated_seconds": "600"}}] * 5)
    batch.cancel()
    results = batch.results(timeout=WAIT)
    assert [r.status for r in results] == [Status.CANCELLED] * 5
    assert batch.progress().by_status == {Status.CANCELLED: 5}

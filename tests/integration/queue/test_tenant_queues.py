"""Tenant queues reach only the workers of their own base queue (one Redis, two deployments)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from amqp.exceptions import ChannelError

from sandq.broker.keys import Keys
from sandq.client.client import Client
from sandq.contract import Status
from sandq.settings import Settings
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory, raw_redis


def queue_depth(client: Client, queue: str) -> int:
    with client.app.connection_for_read() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # kombu's Redis transport: an emptied queue is no longer declared
            return 0
        return int(declared.message_count)


def recorded_ids(settings: Settings) -> list[str]:
    runs = raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)
    return [json.loads(r)["id"] for r in runs]


def test_new_tenants_are_not_consumed_by_workers_of_another_base_queue(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    ours, theirs = queue_settings(), queue_settings()
    start_worker(theirs, concurrency=2)  # another deployment's worker on the same Redis database
    client = make_client(ours)
    handles = [client.submit({"code": "pass", "tenant": t}) for t in ("acme", "acme", "globex", "default")]
    time.sleep(3)  # past the broadcast and two rounds of tenant discovery
    depth = sum(queue_depth(client, q) for q in (ours.queue, f"{ours.queue}.acme", f"{ours.queue}.globex"))
    assert depth == len(handles), "a worker of another base queue consumed our tenants' queues"
    assert recorded_ids(theirs) == []

    start_worker(ours, concurrency=2)
    assert {h.result(timeout=WAIT).status for h in handles} == {Status.SUCCEEDED}
    assert sorted(recorded_ids(ours)) == sorted(h.id for h in handles)
    assert recorded_ids(theirs) == []


def test_a_running_worker_consumes_a_new_tenant_of_its_base_queue(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    start_worker(settings, concurrency=2)
    client = make_client(settings)
    first = client.run({"code": "pass", "tenant": "newcomer"}, timeout=WAIT)
    assert first.status is Status.SUCCEEDED
    assert recorded_ids(settings) == [first.id]

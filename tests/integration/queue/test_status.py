"""``sandq status``: depth by queue and tenant, parked and in flight by tenant, and workers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from sandq.broker.keys import INTERACTIVE, Keys
from sandq.cli import app
from sandq.client.client import Client
from sandq.client.status import snapshot
from sandq.contract import Status
from sandq.settings import Settings
from tests.conftest import settings_env
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory
from tests.integration.queue.test_cancel import wait_running


def test_status_shows_depth_in_flight_and_workers(
    queue_settings: SettingsFactory,
    start_worker: WorkerFactory,
    make_client: Callable[[Settings], Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = queue_settings()
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    worker = start_worker(settings, concurrency=1)
    client = make_client(settings)
    assert client.run({"code": "pass", "tenant": "idle"}, timeout=WAIT).status.value == "succeeded"
    long = client.submit({"code": "pass", "tenant": "acme", "labels": {"simulated_seconds": "600"}})
    wait_running(settings, long.id)
    waiting = [client.submit({"code": "pass", "tenant": t}) for t in ("acme", "acme", "acme", "default")]

    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    rows = {row["tenant"]: row for row in state["tenants"]}
    assert rows["acme"]["queue"] == f"{settings.queue}.acme"
    assert (rows["acme"]["queued"], rows["acme"]["in_flight"]) == (3, 1)
    assert rows["acme"]["messages"] == 3
    assert (rows["default"]["queued"], rows["default"]["messages"], rows["default"]["in_flight"]) == (1, 1, 0)
    assert (rows["idle"]["queued"], rows["idle"]["messages"], rows["idle"]["in_flight"]) == (0, 0, 0)
    assert (state["queued"], state["in_flight"]) == (4, 1)
    assert f"sandq-{worker.proc.pid}@{socket.gethostname()}" in state["workers"]

    table = CliRunner().invoke(app, ["status"])
    assert table.exit_code == 0, table.output
    assert "acme" in table.stdout and f"{settings.queue}.acme" in table.stdout

    long.cancel()
    client.cancel(*(h.id for h in waiting))
    for handle in [long, *waiting]:
        handle.result(timeout=WAIT)


def test_status_shows_parked_executions_and_cancel_ends_them(
    queue_settings: SettingsFactory,
    start_worker: WorkerFactory,
    make_client: Callable[[Settings], Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = queue_settings(max_in_flight=1)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    start_worker(settings, concurrency=2)
    client = make_client(settings)
    long = client.submit({"code": "pass", "tenant": "acme", "labels": {"simulated_seconds": "600"}})
    wait_running(settings, long.id)
    parked = [client.submit({"code": "pass", "tenant": "acme"}) for _ in range(3)]
    deadline = time.monotonic() + WAIT
    while (state := snapshot(client, worker_timeout=None)).parked < 3:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    row = {r.tenant: r for r in state.tenants}["acme"]  # read with the totals: one transaction
    assert (row.messages, row.queued, row.parked, row.in_flight) == (0, 3, 3, 1)

    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "parked 3" in result.stdout

    client.cancel(*(h.id for h in parked))  # they end at once, without waiting for the slot
    assert {h.result(timeout=WAIT).status for h in parked} == {Status.CANCELLED}
    assert snapshot(client, worker_timeout=None).parked == 0
    long.cancel()
    assert long.result(timeout=WAIT).status is Status.CANCELLED


def test_a_snapshot_reads_the_rows_and_the_totals_at_one_instant(idle_client: Client) -> None:
    """Executions move from parked to in flight and out, each move one transaction: the rows of every
    snapshot taken meanwhile add up to its totals."""
    keys, redis = Keys(idle_client.settings.queue), idle_client.redis
    tenants = ("t1", "t2")
    redis.sadd(keys.tenants, *tenants)
    stop = threading.Event()

    def move() -> None:
        at = 0
        while not stop.is_set():
            tenant, ident = tenants[at % 2], f"x{at}"
            with redis.pipeline(transaction=True) as pipe:
                pipe.rpush(keys.parked_for(tenant, INTERACTIVE), ident).sadd(keys.parked, ident).execute()
            with redis.pipeline(transaction=True) as pipe:
                pipe.lrem(keys.parked_for(tenant, INTERACTIVE), 1, ident).srem(keys.parked, ident)
                lease = {ident: time.time() + 600}
                pipe.zadd(keys.in_flight_for(tenant), lease).zadd(keys.in_flight, lease).execute()
            with redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.in_flight_for(tenant), ident).zrem(keys.in_flight, ident).execute()
            at += 1

    mover = threading.Thread(target=move)
    mover.start()
    try:
        for _ in range(300):
            state = snapshot(idle_client, worker_timeout=None)
            rows = [r for r in state.tenants if r.tenant in tenants]
            assert sum(r.parked for r in rows) == state.parked
            assert sum(r.in_flight for r in rows) == state.in_flight
    finally:
        stop.set()
        mover.join()
        redis.srem(keys.tenants, *tenants)

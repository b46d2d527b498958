"""The in-flight semaphore: caps across workers, fair shares, and leases of dead workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from sandq.broker.client import Client
from sandq.broker.keys import Keys
from sandq.contract import Status
from sandq.settings import Settings
from sandq.worker.inflight import InFlight, Verdict
from tests.queue.conftest import WAIT, SettingsFactory, WorkerFactory, raw_redis


def max_overlap(runs: list[dict[str, float]]) -> int:
    current = peak = 0
    for _, step in sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs]):
        current += step
        peak = max(peak, current)
    return peak


def test_acquire_never_exceeds_the_caps_under_threads(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=7, max_in_flight_per_tenant=5)
    sem = InFlight(settings, raw_redis(settings))
    verdicts: list[Verdict] = []

    def take(worker: int) -> None:
        for i in range(20):
            tenant = "a" if i % 2 else "b"
            verdicts.append(sem.acquire(f"{worker}-{i}", tenant, "interactive"))

    threads = [threading.Thread(target=take, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count(Verdict.ACQUIRED) == 7
    keys = Keys(settings.queue)
    raw = raw_redis(settings)
    assert raw.zcard(keys.in_flight) == 7
    assert max(raw.zcard(keys.in_flight_for("a")), raw.zcard(keys.in_flight_for("b"))) <= 5


def test_a_waiting_tenant_gets_the_next_slot(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=2)
    sem = InFlight(settings, raw_redis(settings))
    assert sem.acquire("a1", "a", "batch") is Verdict.ACQUIRED
    assert sem.acquire("a2", "a", "batch") is Verdict.ACQUIRED
    assert sem.acquire("b1", "b", "batch") is Verdict.GLOBAL_CAP  # b now waits
    sem.release("a1", "a")
    assert sem.acquire("a3", "a", "batch") is Verdict.FAIR_SHARE  # a has more running than b
    assert sem.acquire("b1", "b", "batch") is Verdict.ACQUIRED


def test_refused_executions_of_a_starved_tenant_ask_again_sooner(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=2, cap_retry_seconds=0.05)
    sem = InFlight(settings, raw_redis(settings))
    assert sem.acquire("a1", "a", "batch") is Verdict.ACQUIRED
    assert sem.acquire("a2", "a", "batch") is Verdict.ACQUIRED
    refused_b = sem.acquire("b1", "b", "batch")
    assert refused_b is Verdict.GLOBAL_CAP
    assert sem.retry_delay(refused_b, "b") == 0.05 / 5  # b runs nothing: it polls fast
    refused_a = sem.acquire("a3", "a", "batch")
    assert sem.retry_delay(refused_a, "a") == 0.05  # a runs two: the usual pace
    sem.release("a1", "a")
    yielded = sem.acquire("a3", "a", "batch")
    assert yielded is Verdict.FAIR_SHARE
    assert sem.retry_delay(yielded, "a") == 4 * 0.05  # told to yield to b: it backs off


def test_interactive_waiting_goes_before_batch(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=1)
    sem = InFlight(settings, raw_redis(settings))
    assert sem.acquire("x", "t", "batch") is Verdict.ACQUIRED
    assert sem.acquire("i", "t", "interactive") is Verdict.GLOBAL_CAP
    sem.release("x", "t")
    assert sem.acquire("y", "t", "batch") is Verdict.INTERACTIVE_WAITING
    assert sem.acquire("i", "t", "interactive") is Verdict.ACQUIRED


def test_global_cap_holds_across_workers(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_in_flight=3, simulated_run_seconds=0.1)
    start_worker(settings, concurrency=4)
    start_worker(settings, concurrency=4)
    client = make_client(settings)
    handles = [client.submit({"code": "pass", "tenant": f"t{i % 3}"}) for i in range(30)]
    results = [h.result(timeout=WAIT) for h in handles]
    assert {r.status for r in results} == {Status.SUCCEEDED}
    runs = [json.loads(r) for r in raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)]
    assert len(runs) == 30 and max(Counter(r["id"] for r in runs).values()) == 1
    assert max_overlap(runs) <= 3


def test_a_killed_workers_slots_come_back(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_in_flight=2, lease_seconds=2)
    doomed = start_worker(settings, concurrency=2)
    client = make_client(settings)
    for _ in range(2):
        client.submit({"code": "pass", "labels": {"simulated_seconds": "600"}})
    keys = Keys(settings.queue)
    raw = raw_redis(settings)
    deadline = time.monotonic() + WAIT
    while raw.zcard(keys.in_flight) < 2:
        assert time.monotonic() < deadline, "the long runs never started"
        time.sleep(0.1)
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait()
    start_worker(settings, concurrency=2)
    result = client.run({"code": "pass"}, timeout=WAIT)  # runs only once the dead worker's leases expired
    assert result.status is Status.SUCCEEDED
    assert not raw.zscore(keys.in_flight, result.id)
